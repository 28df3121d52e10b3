"""The `config` and `launch` subcommands (registered lazily in planner/cli.py)."""
