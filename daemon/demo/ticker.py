"""Print a numbered tick every 2 seconds, labelled by DEMO_LABEL, so a demo tree shows who is alive."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

INTERVAL = 2.0


class _Stop(Exception):
    """Raised from the SIGTERM handler so the main loop, not the handler, does the printing."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main() -> int:
    label = os.environ.get("DEMO_LABEL", "ticker")
    signal.signal(signal.SIGTERM, _stop)
    tick = 0
    try:
        print(f"{label}: started (pid {os.getpid()})", flush=True)
        while True:
            tick += 1
            print(f"{label}: tick {tick}", flush=True)
            time.sleep(INTERVAL)
    except (_Stop, KeyboardInterrupt):
        print(f"{label}: stopping after {tick} ticks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
