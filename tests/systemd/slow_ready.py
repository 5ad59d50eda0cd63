"""A worker of the systemd test tree that becomes ready late (tests/systemd/run.sh).

Declared ``ready = "notify"``: it sends READY=1 on $NOTIFY_SOCKET after DELAY seconds (argv[1], default 2), then
sleeps until it is stopped. The daemon's own READY=1 must wait for it, so ``systemctl start`` takes at least DELAY.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def main() -> None:
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(os.environ["NOTIFY_SOCKET"])
        sock.send(b"READY=1")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
