"""Entry point: python -m services.exchange_gateway."""

import asyncio
import sys

from services.exchange_gateway.bootstrap import main
from shared.config import ConfigError
from shared.server import PortInUse, install_uvloop

if __name__ == "__main__":
    install_uvloop()
    try:
        asyncio.run(main())
    except (PortInUse, ConfigError) as exc:
        print(f"exchange_gateway: {exc}", file=sys.stderr)
        sys.exit(2)
