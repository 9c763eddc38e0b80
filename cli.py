"""Run einsearch from a checkout without installing it: ``python cli.py describe btt --D 256``."""

from einsearch.cli import main

if __name__ == "__main__":
    main()
