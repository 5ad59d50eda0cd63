"""Run for a random 5-20 seconds, then exit 1 on purpose, so the demo tree shows restarts happening."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from types import FrameType


class _Stop(Exception):
    """Raised from the SIGTERM handler so the main code, not the handler, does the printing."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    lifetime = random.uniform(5.0, 20.0)
    try:
        print(f"flaky: started (pid {os.getpid()}), will crash in {lifetime:.1f} s", flush=True)
        time.sleep(lifetime)
    except (_Stop, KeyboardInterrupt):
        print("flaky: stopping", flush=True)
        return 0
    print(f"flaky: crashing on purpose after {lifetime:.1f} s (exit 1); expect a restart", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
