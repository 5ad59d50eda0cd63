"""A child program for tests/test_state_store.py: opens a StateStore in its own process and misbehaves on cue.

Usage: ``python state_writer.py MODE PATH``

* ``commit-loop`` — load the store, then commit ``{"n": i, "pad": "x" * 1000}`` with ``last_seq=i`` for
  i = last_seq + 1, + 2, ... forever, writing ``i`` as a line to stdout after each commit returns (so every
  printed number is a commit the store promised was durable). The test SIGKILLs it at a random moment.
* ``hold-reader`` — open the store, start a read transaction, print ``reading`` and block (until SIGKILL).
* ``hold-open`` — open the store, print ``open`` and block until stdin reaches EOF, then close and exit 0.
"""

from __future__ import annotations

import os
import sys

from agents.state import StateStore

PAD = "x" * 1000


def commit_loop(path: str) -> None:
    store = StateStore(path)
    _, seq = store.load()
    while True:
        seq += 1
        store.commit({"n": seq, "pad": PAD}, seq)
        os.write(1, b"%d\n" % seq)  # unbuffered: the parent sees each durable commit at once


def hold_reader(path: str) -> None:
    store = StateStore(path)
    env = store._env  # the test needs a read transaction left open by a process that then dies
    assert env is not None
    with env.begin():
        os.write(1, b"reading\n")
        sys.stdin.read()  # the parent SIGKILLs us here


def hold_open(path: str) -> None:
    with StateStore(path):
        os.write(1, b"open\n")
        sys.stdin.read()


def main() -> int:
    mode, path = sys.argv[1], sys.argv[2]
    {"commit-loop": commit_loop, "hold-reader": hold_reader, "hold-open": hold_open}[mode](path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
