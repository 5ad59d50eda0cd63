"""``doctor``'s slow half, run in a child process so that the daemon's loop never waits on a disk:
``python -m daemon.services.probe STATE_DIR`` prints one JSON object and exits.

* ``commit_s``: one durable LMDB write transaction (``<state_dir>/doctor``, fsync'd), timed; ``commit_error``
  instead when it failed.
* ``stale_readers``: for each LMDB environment of the state directory (the broker's outbox, the restart history,
  each agent's state), the reader slots held by processes that no longer exist, ``{"broker": [pid, ...]}``. They are
  read, not cleared (an agent clears its own at its next start, LMDB's ``reader_check``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import lmdb
import orjson


def commit(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "doctor"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = lmdb.open(str(path), map_size=1 << 20, subdir=True, sync=True, metasync=True, max_readers=4)
        try:
            began = time.monotonic()
            with env.begin(write=True) as txn:
                txn.put(b"probe", orjson.dumps({"at": time.time(), "pid": os.getpid()}))
            return {"commit_s": round(time.monotonic() - began, 6)}
        finally:
            env.close()
    except (OSError, lmdb.Error) as exc:
        return {"commit_error": str(exc)}


def environments(state_dir: Path) -> dict[str, Path]:
    found = {name: state_dir / name for name in ("broker", "history", "workflows", "tasks", "children")}
    agents = state_dir / "agents"
    if agents.is_dir():
        found.update({f"agents/{p.name}": p for p in sorted(agents.iterdir())})
    return {name: path for name, path in found.items() if (path / "data.mdb").exists()}


def stale_readers(state_dir: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, path in environments(state_dir).items():
        try:
            env = lmdb.open(str(path), readonly=True, create=False, subdir=True, max_dbs=8, max_readers=126)
        except lmdb.Error:
            continue
        try:
            table = env.readers()
        finally:
            env.close()
        dead = sorted({pid for pid in _reader_pids(table) if not _alive(pid)})
        if dead:
            out[name] = dead
    return out


def _reader_pids(table: str) -> list[int]:
    """The pids of LMDB's reader table text (``pid thread txnid`` lines after a header; "(no active readers)")."""
    pids = []
    for line in table.splitlines()[1:]:
        first = line.split()[:1]
        if first and first[0].isdigit():
            pids.append(int(first[0]))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    state_dir = Path(sys.argv[1])
    result = {**commit(state_dir), "stale_readers": stale_readers(state_dir)}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
