"""Starts a grandchild (in the same process group) that writes its pid to PIDFILE, then sleeps.

usage: grandparent.py PIDFILE
The grandchild writes the file atomically (temporary name, then rename) so a reader never sees half a pid.
"""

import subprocess
import sys
import time

GRANDCHILD = """
import os, sys, time
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(path + ".tmp", path)
while True:
    time.sleep(1000)
"""

subprocess.Popen([sys.executable, "-c", GRANDCHILD, sys.argv[1]])
print("spawned grandchild", flush=True)
while True:
    time.sleep(1000)
