"""Entry point: python -m services.user_service."""

import asyncio
import sys

from services.user_service.bootstrap import main
from shared.config import ConfigError
from shared.server import PortInUse, install_uvloop

if __name__ == "__main__":
    install_uvloop()
    try:
        asyncio.run(main())
    except ConfigError as exc:
        print(f"user_service: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except PortInUse as exc:
        print(f"user_service: {exc}", file=sys.stderr)
        sys.exit(2)
