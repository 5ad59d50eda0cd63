"""Exits with STATUS after DELAY seconds.

usage: exit_after.py STATUS DELAY [ONCE_FILE]
With ONCE_FILE, only the first run exits (it creates the file); later runs find it and sleep for good.
"""

import sys
import time
from pathlib import Path

status, delay = int(sys.argv[1]), float(sys.argv[2])
if len(sys.argv) > 3:
    once = Path(sys.argv[3])
    if once.exists():
        print("second run: staying up", flush=True)
        while True:
            time.sleep(1000)
    once.write_text("ran")
print(f"exiting with {status} in {delay}s", flush=True)
time.sleep(delay)
sys.exit(status)
