"""Holds MB MiB of touched (resident) memory, prints "ready", then sleeps until killed.

usage: memory_hog.py MB [ONCE_FILE]
With ONCE_FILE, only the first run allocates (it creates the file); later runs hold nothing and print "small".
"""

import sys
import time
from pathlib import Path

size = int(sys.argv[1]) << 20
if len(sys.argv) > 2:
    once = Path(sys.argv[2])
    if once.exists():
        size = 0
    once.write_text("ran")
hog = b"\xff" * size  # bytes * n writes every byte, so every page is resident
print("ready" if size else "small", flush=True)
while True:
    time.sleep(1000)
