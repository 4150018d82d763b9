"""A separate process that runs only the dispatcher, for the kill -9 test.

    python tests/engine_driver.py DB_PATH HTTP_PORT

Opens the SQLite file, points every channel at the HTTP sink on 127.0.0.1:HTTP_PORT (which
runs in the test's process), prints ``ready`` and dispatches until it is killed.  It runs on
the system clock.  ``RESPONDER_DRIVER_CONCURRENCY`` sets the number of sends in flight.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from responder import config  # noqa: E402
from responder.clock import SystemClock  # noqa: E402
from responder.engine.dispatcher import Dispatcher  # noqa: E402
from responder.engine.metrics import Metrics  # noqa: E402
from responder.store import Database  # noqa: E402
from tests.engine_helpers import SECRET, wire  # noqa: E402


async def main(db_path: str, port: int) -> None:
    cfg = config.load(ROOT / "config" / "responder.toml")
    cfg.service.database = db_path
    wire(cfg, port, 9)
    cfg.alerts.concurrency = int(os.environ.get("RESPONDER_DRIVER_CONCURRENCY", "4"))
    db = await Database(db_path).open()
    dispatcher = Dispatcher(db, cfg, SystemClock(), SECRET, Metrics())
    print("ready", flush=True)
    await dispatcher.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
