"""`python -m cli.__main__ ...` runs the CLI like the `fitplan` script does."""
from cli.main import main

if __name__ == "__main__":
    main()
