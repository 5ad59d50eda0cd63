"""The broker's durable outbox in LMDB: accepted casts until their recipient says done.

One environment at ``<state_dir>/broker``, opened by the daemon after it has forked nothing (no
environment crosses a fork), with three named databases:

    msgs   recipient \\0 seq(8 bytes BE)  ->  {"id", "from", "body"}     undone casts, in mailbox order
    seqs   recipient                      ->  next seq (8 bytes BE)       survives the deletion of all msgs
    chans  sender \\0 recipient            ->  [cause, index, id]          last accepted agent-to-agent cast

Every change of one loop turn goes in one write transaction (group commit), which returns only after
fsync: a message is acknowledged to its sender only once it is on disk.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import orjson

from daemon.broker.admission import Batch

__all__ = ["Batch", "Outbox", "Stored", "outbox_path"]

_SEQ = struct.Struct(">Q")


@dataclass
class Stored:
    recipient: str
    seq: int
    record: dict[str, Any]


class Outbox:
    def __init__(self, path: Path, map_size: int = 256 << 20, max_map_size: int = 16 << 30) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._max = max_map_size
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=4, subdir=True, sync=True, metasync=True,
                              max_readers=16)
        self._env.reader_check()
        self._msgs = self._env.open_db(b"msgs")
        self._seqs = self._env.open_db(b"seqs")
        self._chans = self._env.open_db(b"chans")

    def close(self) -> None:
        self._env.close()

    def load(self) -> tuple[list[Stored], dict[str, int], dict[tuple[str, str], list[Any]]]:
        """Everything still undone (in mailbox order per recipient), the next seqs and channel marks."""
        stored: list[Stored] = []
        seqs: dict[str, int] = {}
        chans: dict[tuple[str, str], list[Any]] = {}
        with self._env.begin() as txn:
            for key, value in txn.cursor(self._msgs):
                name, seq = _split(key)
                stored.append(Stored(name, seq, orjson.loads(value)))
            for key, value in txn.cursor(self._seqs):
                seqs[bytes(key).decode()] = _SEQ.unpack(value)[0]
            for key, value in txn.cursor(self._chans):
                sender, _, recipient = bytes(key).decode().partition("\0")
                chans[(sender, recipient)] = orjson.loads(value)
        return stored, seqs, chans

    def commit(self, batch: Batch) -> None:
        """Write the batch in one durable transaction, growing the map if it is full."""
        while True:
            try:
                self._write(batch)
                return
            except lmdb.MapFullError:
                size = self._env.info()["map_size"]
                if size * 2 > self._max:
                    raise
                self._env.set_mapsize(size * 2)

    def drop_recipient(self, name: str) -> int:
        """Delete every undone message to ``name`` (it left the tree); returns how many."""
        prefix = name.encode() + b"\0"
        count = 0
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(self._msgs)
            if cursor.set_range(prefix):
                while cursor.key().startswith(prefix):
                    count += 1
                    if not cursor.delete():
                        break
        return count

    def _write(self, batch: Batch) -> None:
        with self._env.begin(write=True) as txn:
            for name, seq, record in batch.puts:
                txn.put(_key(name, seq), orjson.dumps(record), db=self._msgs)
            for name, seq in batch.deletes:
                txn.delete(_key(name, seq), db=self._msgs)
            for name, seq in batch.seqs.items():
                txn.put(name.encode(), _SEQ.pack(seq), db=self._seqs)
            for (sender, recipient), mark in batch.chans.items():
                txn.put(f"{sender}\0{recipient}".encode(), orjson.dumps(mark), db=self._chans)


def _key(name: str, seq: int) -> bytes:
    return name.encode() + b"\0" + _SEQ.pack(seq)


def _split(key: bytes) -> tuple[str, int]:
    raw = bytes(key)
    return raw[:-9].decode(), _SEQ.unpack(raw[-8:])[0]


def outbox_path(state_dir: Path) -> Path:
    return Path(os.fspath(state_dir)) / "broker"
