"""A tiny server for the SIGTERM test: prints its port, serves until a signal, exits 0."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "support"))

from marketplace_common.logging import configure_logging
from server_kit_fakes import FakeBids, make_server


async def main() -> int:
    configure_logging("INFO", json=True)
    server = make_server(bids=FakeBids(slow_seconds=1.0), shutdown_grace_seconds=5)
    port = await server.start()
    print(port, flush=True)
    await server.serve_until_signal()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
