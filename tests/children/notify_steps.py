"""A child that runs a script of sd_notify steps, for the tests of what a notify child may send.

usage: notify_steps.py STEP... [--on-term STEP...]

Steps run in order; then the child waits for signals. With ``--on-term``, SIGTERM runs those steps instead of
ending the child (which then exits 0 unless a step exits first). Each step prints one line once done, so a test
reads the child's progress in the daemon's log (``name | ...``).

  send:TEXT     one datagram on $NOTIFY_SOCKET; ``\\n`` in TEXT is a newline (several fields in one datagram)
  stamp:FILE    write CLOCK_BOOTTIME (seconds) to FILE, atomically
  take:FILE     wait until FILE exists, then delete it (the test decides when this step passes, run after run)
  sleep:S       sleep S seconds (on purpose: a child that takes its time)
  pings:S       from now on, WATCHDOG=1 every S seconds (from a thread) until SIGTERM arrives
  exit:N        exit with status N
"""

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

argv = sys.argv[1:]
if "--on-term" in argv:
    cut = argv.index("--on-term")
    steps, on_term = argv[:cut], argv[cut + 1 :]
else:
    steps, on_term = argv, None

sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
termed = threading.Event()


def ping(every: float) -> None:
    while not termed.wait(every):
        sock.send(b"WATCHDOG=1")


def run(script: list[str], where: str) -> None:
    for step in script:
        kind, _, arg = step.partition(":")
        if kind == "send":
            sock.send(arg.replace("\\n", "\n").encode())
        elif kind == "stamp":
            Path(arg + ".tmp").write_text(repr(time.clock_gettime(time.CLOCK_BOOTTIME)))
            os.replace(arg + ".tmp", arg)
        elif kind == "take":
            while not os.path.exists(arg):
                time.sleep(0.01)
            os.unlink(arg)
        elif kind == "sleep":
            time.sleep(float(arg))
        elif kind == "pings":
            threading.Thread(target=ping, args=(float(arg),), daemon=True).start()
        elif kind == "exit":
            print(f"{where}: exit {arg}", flush=True)
            sys.exit(int(arg))
        else:
            raise SystemExit(f"unknown step {step!r}")
        print(f"{where}: {step}", flush=True)


def on_sigterm(signum, frame) -> None:
    termed.set()
    run(on_term or [], "term")
    sys.exit(0)


if on_term is not None:
    signal.signal(signal.SIGTERM, on_sigterm)
print("started", flush=True)
run(steps, "step")
while True:
    signal.pause()
