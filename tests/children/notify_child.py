"""A systemd-style child: sends STATUS= and READY=1 on $NOTIFY_SOCKET, then WATCHDOG=1 pings.

argv: [ready_after_seconds] [ping_every_seconds or 0 for none] [stop_pinging_after_n]
"""

import os
import socket
import sys
import time

ready_after = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
ping_every = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
pings = int(sys.argv[3]) if len(sys.argv) > 3 else -1

sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
sock.send(b"STATUS=warming up")
time.sleep(ready_after)  # the child is slow to start on purpose
sock.send(b"READY=1\nSTATUS=serving")
print("ready", flush=True)
while True:
    if ping_every and pings != 0:
        time.sleep(ping_every)
        sock.send(b"WATCHDOG=1")
        pings -= 1
    else:
        time.sleep(3600)
