"""Entry point: python -m services.exchange_gateway [migrate]."""

import asyncio
import sys

from services.exchange_gateway.adapters.journal import HISTORY
from services.exchange_gateway.bootstrap import main
from shared.config import ConfigError
from shared.migrations import migrate_command
from shared.server import PortInUse, install_uvloop

if __name__ == "__main__":
    if sys.argv[1:] == ["migrate"]:
        # Only migrate the database to the newest schema revision (also done at every start).
        sys.exit(migrate_command("exchange_gateway", "GATEWAY_DB_URL", "exchange_gateway.db", HISTORY))
    install_uvloop()
    try:
        asyncio.run(main())
    except (PortInUse, ConfigError) as exc:
        print(f"exchange_gateway: {exc}", file=sys.stderr)
        sys.exit(2)
