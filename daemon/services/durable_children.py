"""Dynamic children that outlive a restart of the daemon: attached with ``durable``, attached again at boot.

A workflow's process (``workflow-ID`` under ``workflows``) is such a child: results of its steps are casts to it,
and a cast to a name that is not in the tree is refused, so after a crash of the daemon it must be back in the tree
before any task agent reports. The record (parent, the attach request's spec, ephemeral) is committed before the
attach is answered and deleted when the child leaves the tree. LMDB at ``<state_dir>/children``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lmdb
import orjson

log = logging.getLogger("foundationd.children")


class DurableChildren:
    def __init__(self, state_dir: Path) -> None:
        path = state_dir / "children"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._env = lmdb.open(str(path), map_size=64 << 20, subdir=True, sync=True, metasync=True, max_readers=8)
        self._env.reader_check()
        self._specs: dict[str, dict[str, Any]] = {}  # name -> the attach request's spec

    def close(self) -> None:
        self._env.close()

    def remember(self, name: str, parent: str, spec: dict[str, Any], ephemeral: bool) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(name.encode(), orjson.dumps({"parent": parent, "spec": spec, "ephemeral": ephemeral}))
        self._specs[name] = spec

    def spec(self, name: str) -> dict[str, Any] | None:
        """The spec a durable child was attached with (its environment, for instance), while it is remembered."""
        return self._specs.get(name)

    def removed(self, names: Iterable[str]) -> None:
        gone = [n for n in names if n in self._specs]
        if gone:
            with self._env.begin(write=True) as txn:
                for name in gone:
                    txn.delete(name.encode())
            for name in gone:
                del self._specs[name]

    def restore(self, attach: Callable[[str, dict[str, Any], bool], None]) -> None:
        """Attach every remembered child again (at boot, after the tree's own children have been started)."""
        with self._env.begin() as txn:
            records = [(bytes(k).decode(), orjson.loads(v)) for k, v in txn.cursor()]
        dropped = []
        for name, record in records:
            try:
                self._specs[name] = record["spec"]
                attach(record["parent"], record["spec"], record["ephemeral"])
            except Exception as exc:
                log.warning("could not attach %s again (dropped): %s", name, exc)
                dropped.append(name)
        if dropped:
            self._specs.update({name: {} for name in dropped})
            self.removed(dropped)
        if records:
            log.info("attached %d durable dynamic child(ren) again", len(records) - len(dropped))
