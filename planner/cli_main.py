"""`python -m planner.cli_main ...` runs the CLI like the `fitplan` script does."""
from planner.cli import main

if __name__ == "__main__":
    main()
