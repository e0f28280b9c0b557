"""Entry point: python -m launcher (what ``make run`` calls)."""

import sys

from launcher.stack import main

if __name__ == "__main__":
    sys.exit(main())
