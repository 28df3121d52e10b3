"""One module per `fitplan` subcommand, each defining `command` (registered in cli/main.py)."""
