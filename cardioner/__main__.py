"""``python -m cardioner``: the command line."""

from cardioner.cli import main

if __name__ == "__main__":
    main()
