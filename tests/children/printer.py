"""Writes COUNT numbered lines, some in pieces, then an unterminated last line, and exits 0.

usage: printer.py COUNT
Lines are "line 0" .. "line COUNT-1"; every tenth is written in two writes with a pause between them, so
the daemon must join the halves. The last output, "tail-without-newline", has no newline at all.
"""

import os
import sys
import time

count = int(sys.argv[1])
for i in range(count):
    if i % 10 == 0:
        os.write(1, f"line {i} first-half ".encode())
        time.sleep(0.01)
        os.write(1, b"second-half\n")
    else:
        os.write(1, f"line {i}\n".encode())
os.write(1, b"tail-without-newline")
