"""Entry point: python -m services.user_service [migrate]."""

import asyncio
import sys

from services.user_service.adapters.tables import HISTORY
from services.user_service.bootstrap import main
from services.user_service.config import DB_FILENAME
from shared.config import ConfigError
from shared.migrations import migrate_command
from shared.server import PortInUse, install_uvloop

if __name__ == "__main__":
    if sys.argv[1:] == ["migrate"]:
        # Only migrate the database to the newest schema revision (also done at every start).
        sys.exit(migrate_command("user_service", "USER_DB_URL", DB_FILENAME, HISTORY))
    install_uvloop()
    try:
        asyncio.run(main())
    except ConfigError as exc:
        print(f"user_service: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except PortInUse as exc:
        print(f"user_service: {exc}", file=sys.stderr)
        sys.exit(2)
