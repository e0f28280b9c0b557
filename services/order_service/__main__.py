"""Entry point: python -m services.order_service."""

import asyncio
import sys

from services.order_service.bootstrap import main
from shared.server import PortInUse, install_uvloop

if __name__ == "__main__":
    install_uvloop()
    try:
        asyncio.run(main())
    except PortInUse as exc:
        print(f"order_service: {exc}", file=sys.stderr)
        sys.exit(2)
