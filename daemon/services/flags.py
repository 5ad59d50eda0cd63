"""Feature flags in the daemon (DESIGN 3.8): the table, on disk and pushed to every agent on every change.

    foundationctl flag set/kill/revive/delete ─┐                        ┌──> FlagStore (LMDB, <state dir>/flags)
    [flags] in the config (seed, at start/reload)┼──> FlagSet (pure) ──> │──> flag_changed events (the stream)
    migration steps (daemon/services/migrations.py)┘     [Change]       └──> broker.push_info({"flags": table})
    agent hello ──> welcome {flags: table} (broker.on_welcome)               └──> each connected agent's mailbox

No polling anywhere: an agent has the table from its welcome on, and every change reaches it as an info message
that its runtime takes for itself (agents/runtime.py); ``Agent.enabled(flag, id)`` answers from that copy. The
store is the truth: a flag set at run time keeps its value over the config's, across restarts and reloads;
the config only adds the flags it declares that are not known yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

from daemon.core.tree import Worker
from daemon.services.flags_core import Change, FlagSet
from daemon.services.flags_store import FlagStore, flags_path
from daemon.services.migrations import Migrations
from daemon.services.rollouts import Rollouts
from ipc.errors import ErrorCode, FoundationError
from ipc.flags import PUSH_KEY, bucket, check_name, describe, evaluate

log = logging.getLogger("foundationd")


class FlagService:
    def __init__(self, app: Any, state_dir: Path) -> None:
        """``app``: the daemon (its loop, config, broker and ``obs`` are used from ``start`` on)."""
        self.app = app
        self.state_dir = state_dir
        self.store: FlagStore | None = None
        self.core = FlagSet()
        self.migrations = Migrations(self, app)
        self.rollouts = Rollouts(app, state_dir)  # agent versions, canary then all (rollouts.py)
        self.agent_starts = [0, 0]  # agents started, agents that failed to start: the state-recovery gate's input

    def start(self) -> None:
        """At the daemon's start, once the broker exists and before the tree boots (agents' hellos need it)."""
        stored = None
        try:
            self.store = FlagStore(flags_path(self.state_dir))
            table, stored = self.store.load()
            self.core = FlagSet(table.get("flags", {}), int(table.get("version", 0)))
        except (OSError, lmdb.Error) as exc:
            log.error("flags: the store could not be opened (%s): flags are kept in memory only", exc)  # noqa: TRY400
        if self.app.broker is not None:
            self.app.broker.on_welcome(lambda name: {"flags": self.core.table()})
        self.app.obs.stream.listeners.append(self._count_agent_starts)
        self.configure(self.app.config, stored)
        self.rollouts.start()

    def configure(self, config: Any, stored: dict[str, Any] | None = None) -> None:
        """The config's ``[flags]`` and ``[migration]`` (at start, and after each reload)."""
        self.changed(self.core.seed(dict(config.flags)), by="config")
        self.migrations.configure(config.migration, stored)

    def close(self) -> None:
        self.migrations.close()
        self.rollouts.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _count_agent_starts(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["type"] in ("child_started", "start_failed"):
                node = self.app.tree.find_quiet(str(event.get("name")))
                if isinstance(node, Worker) and node.spec.agent:
                    self.agent_starts[event["type"] == "start_failed"] += 1

    # ---- operations (the ``flag`` verb) ----

    def operate(self, op: str, name: str, value: object, by: str, reason: str | None = None) -> dict[str, Any]:
        try:
            if op == "set":
                changes = self.core.set(name, value)
            elif op == "kill":
                changes = self.core.kill(name)
            elif op == "revive":
                changes = self.core.revive(check_name(name))
            else:
                changes = self.core.delete(check_name(name))
                if not changes:
                    raise KeyError(name)
        except ValueError as exc:
            raise FoundationError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except KeyError:
            raise FoundationError(ErrorCode.NO_SUCH_FLAG, f"no flag named {name!r}") from None
        self.changed(changes, by=by, reason=reason)
        flag = self.core.flags.get(name)
        return {"name": name, "changed": bool(changes), "version": self.core.version,
                **({"flag": flag, "value": describe(flag)} if flag is not None else {"deleted": True})}

    def changed(self, changes: Iterable[Change], by: str, reason: str | None = None,
                migration: dict[str, Any] | None = None, record: dict[str, Any] | None = None) -> None:
        """Persist (with the migration's position and log record, in the same transaction), publish, push."""
        changes = list(changes)
        if not changes and migration is None:
            return
        if self.store is not None:
            try:
                self.store.save(self.core.table(), migration, [record] if record else None)
            except lmdb.Error as exc:
                log.error("flags: could not persist a change: %s", exc)  # noqa: TRY400
        for change in changes:
            self.app.obs.publish("flag_changed", **change.event(), by=by, **({"reason": reason} if reason else {}))
            log.info("flag %s: %s -> %s (by %s)", change.name, change.event()["old"], change.event()["new"], by)
        if changes and self.app.broker is not None:
            self.app.broker.push_info({PUSH_KEY: self.core.table()})

    # ---- reading (the ``flags`` verb) ----

    def listing(self) -> dict[str, Any]:
        flags = [{"name": name, **flag, "value": describe(flag)} for name, flag in sorted(self.core.flags.items())]
        return {"version": self.core.version, "flags": flags, "migration": self.migrations.brief()}

    def check(self, name: str, ident: str) -> dict[str, Any]:
        flag = self.core.flags.get(name)
        return {"name": name, "id": ident, "enabled": evaluate(flag, name, ident), "bucket": bucket(name, ident),
                "known": flag is not None, **({"value": describe(flag)} if flag is not None else {})}
