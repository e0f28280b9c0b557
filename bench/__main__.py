"""Entry point: ``python -m bench`` (what ``make bench`` and ``make soak`` call)."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
