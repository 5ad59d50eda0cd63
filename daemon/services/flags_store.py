"""Flags and the migration's position on disk: one LMDB environment, ``<state dir>/flags``.

    b"flags"          {"version", "flags": {name: flag}}          the whole table (it is small), one put a change
    b"migration"      {"stage", "since", "baseline", "stage0", "stages"}   where the migration stands
    b"log" + 8 bytes  {"ts", "action", "from", "to", "by", "reason"}       every step and rollback, oldest first

The daemon opens it at its start (after its last fork of nothing) and writes one short transaction a change, with
sync on: a change the CLI was told about is on disk. ``foundationctl migrate emergency-rollback --offline`` opens it
too, while the daemon is down, and writes stage 0's values there (``stage0`` is kept here for that: the CLI does
not read the config).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import lmdb
import orjson

FLAGS, MIGRATION, LOG = b"flags", b"migration", b"log"
_SEQ = struct.Struct(">Q")
KEEP_LOG = 10_000


def flags_path(state_dir: Path) -> Path:
    return state_dir / "flags"


class FlagStore:
    def __init__(self, path: Path, map_size: int = 16 << 20) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._env = lmdb.open(str(path), map_size=map_size, subdir=True, sync=True, metasync=True, max_readers=16,
                               max_dbs=0)
        self._env.reader_check()

    def close(self) -> None:
        self._env.close()

    def load(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the flag table, or an empty one at version 0; the migration record, or None)."""
        with self._env.begin() as txn:
            flags, migration = txn.get(FLAGS), txn.get(MIGRATION)
            table = orjson.loads(flags) if flags is not None else {"version": 0, "flags": {}}
            return table, orjson.loads(migration) if migration is not None else None

    def save(self, table: dict[str, Any] | None = None, migration: dict[str, Any] | None = None,
             log: list[dict[str, Any]] | None = None) -> None:
        """Whatever is given, in one transaction."""
        with self._env.begin(write=True) as txn:
            if table is not None:
                txn.put(FLAGS, orjson.dumps(table))
            if migration is not None:
                txn.put(MIGRATION, orjson.dumps(migration))
            if log:
                cursor = txn.cursor()
                found = cursor.set_range(LOG) and self._last(cursor)
                last = _SEQ.unpack(bytes(cursor.key())[len(LOG):])[0] if found else 0
                for offset, record in enumerate(log, 1):
                    txn.put(LOG + _SEQ.pack(last + offset), orjson.dumps(record))
                oldest_kept = last + len(log) - KEEP_LOG + 1
                while cursor.set_range(LOG) and bytes(cursor.key()).startswith(LOG):
                    if _SEQ.unpack(bytes(cursor.key())[len(LOG):])[0] >= oldest_kept or not cursor.delete():
                        break

    @staticmethod
    def _last(cursor: lmdb.Cursor) -> bool:
        """Move to the last log record (the cursor is on the first); False if there is none."""
        if not bytes(cursor.key()).startswith(LOG):
            return False
        cursor.last()
        while not bytes(cursor.key()).startswith(LOG):
            if not cursor.prev():
                return False
        return True

    def log(self, count: int = 50) -> list[dict[str, Any]]:
        """The last ``count`` steps and rollbacks, oldest first."""
        out: list[dict[str, Any]] = []
        with self._env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(LOG) or not self._last(cursor):
                return out
            while len(out) < count and bytes(cursor.key()).startswith(LOG):
                out.append(orjson.loads(cursor.value()))
                if not cursor.prev():
                    break
        out.reverse()
        return out
