"""Entry point: python -m services.order_service [migrate]."""

import asyncio
import sys

from services.order_service.adapters.db import HISTORY
from services.order_service.bootstrap import main
from shared.config import ConfigError
from shared.migrations import migrate_command
from shared.server import PortInUse, install_uvloop

if __name__ == "__main__":
    if sys.argv[1:] == ["migrate"]:
        # Only migrate the database to the newest schema revision (also done at every start).
        sys.exit(migrate_command("order_service", "ORDER_DB_URL", "order_service.db", HISTORY))
    install_uvloop()
    try:
        asyncio.run(main())
    except (PortInUse, ConfigError) as exc:
        print(f"order_service: {exc}", file=sys.stderr)
        sys.exit(2)
