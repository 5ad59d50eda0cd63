"""A scriptable systemd-style child for the sd_notify tests: READY=1, STATUS= and WATCHDOG=1 on $NOTIFY_SOCKET.

usage: sd_child.py [options]
  --ready-after S     sleep S seconds (on purpose: a slow start) before READY=1
  --ready-when FILE   wait until FILE exists before READY=1 (the test decides when the child is ready)
  --never-ready       never send READY=1
  --stamp FILE        write CLOCK_BOOTTIME (seconds) to FILE just before READY=1 is sent; /proc/PID/stat's
                      starttime counts in the same clock, so a sibling's start can be compared with it
  --status TEXT       STATUS= sent with READY=1 (default "serving")
  --ping-every S|auto WATCHDOG=1 every S seconds; "auto" is half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
                      would have it (no pings when it is unset); each ping prints "ping N"
  --pings N           stop pinging after N pings
  --count FILE        count this run in FILE (1 for the first start, 2 for the next, ...)
  --only-run K        --never-ready and --pings apply only to run K (needs --count); other runs are well-behaved
"""

import argparse
import os
import socket
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--ready-after", type=float, default=0.0)
parser.add_argument("--ready-when")
parser.add_argument("--never-ready", action="store_true")
parser.add_argument("--stamp")
parser.add_argument("--status", default="serving")
parser.add_argument("--ping-every", default="0")
parser.add_argument("--pings", type=int, default=-1)
parser.add_argument("--count")
parser.add_argument("--only-run", type=int)
args = parser.parse_args()

run = 1
if args.count:
    counter = Path(args.count)
    run = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(run))
faulty = args.only_run is None or args.only_run == run
never_ready = args.never_ready and faulty
pings = args.pings if faulty else -1

if args.ping_every == "auto":
    usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    ping_every = usec / 2e6
else:
    ping_every = float(args.ping_every)

sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
sock.send(b"STATUS=warming up")
print(f"run {run} starting", flush=True)
time.sleep(args.ready_after)
if args.ready_when:
    while not os.path.exists(args.ready_when):
        time.sleep(0.02)
if not never_ready:
    if args.stamp:
        Path(args.stamp + ".tmp").write_text(repr(time.clock_gettime(time.CLOCK_BOOTTIME)))
        os.replace(args.stamp + ".tmp", args.stamp)
    sock.send(f"READY=1\nSTATUS={args.status}".encode())
    print(f"run {run} ready", flush=True)
sent = 0
while True:
    if ping_every > 0 and pings != 0:
        time.sleep(ping_every)
        sock.send(b"WATCHDOG=1")
        sent += 1
        pings -= 1
        print(f"run {run} ping {sent}", flush=True)
    else:
        time.sleep(3600)
