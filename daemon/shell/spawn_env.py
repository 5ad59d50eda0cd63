"""What the daemon adds to a child's start: its broker endpoint and token, the state migrations a staged migration
wants of an agent (FOUNDATION_STATE_MIGRATIONS), its NOTIFY_SOCKET, and for a child that runs as another user
(``user=``), the directories it must reach.

Preparing those directories (chmod, chown of the agent's state directory) is done once per change of the child's
spec, not at every spawn: a crash-looping agent would otherwise walk its state directory at every restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from daemon.core.spec import WorkerSpec
from daemon.shell.process import SpawnError
from ipc.state_migration import ENV as STATE_MIGRATIONS
from ipc.state_store import agent_state_path, fsync_dir

if TYPE_CHECKING:
    from daemon.broker.broker import Broker
    from daemon.shell.child_notify import ChildNotifySocket


class Identities(Protocol):
    def identity(self, spec: WorkerSpec) -> tuple[int, int] | None: ...


class SpawnEnv:
    """Builds the extra environment of each spawn; ``broker`` and ``notify`` are set once they exist."""

    def __init__(self, runtime_dir: Path, state_dir: Path, identities: Identities) -> None:
        self.runtime_dir, self.state_dir = runtime_dir, state_dir
        self._identities = identities
        self.broker: Broker | None = None
        self.notify: ChildNotifySocket | None = None
        self._prepared: dict[str, tuple[WorkerSpec, int, int]] = {}  # name -> the spec and ids it was prepared for
        # name -> the state migrations the agent should have (JSON), set by the migration (services/migrations.py)
        self.state_migrations: dict[str, str] = {}

    def forget(self, name: str) -> None:
        """The child is gone (or its spec changed): prepare its directories again at its next start."""
        self._prepared.pop(name, None)

    def extra(self, name: str, spec: WorkerSpec) -> dict[str, str]:
        identity = self._identities.identity(spec)  # (uid, gid) of a child with user=, else None; SpawnError if unknown
        if identity is not None and (spec.agent or spec.ready == "notify"):
            self._share_dirs_once(name, spec, *identity)
        extra = {}
        if spec.agent and self.broker is not None:
            token = self.broker.expect(name)
            try:
                endpoint = self.broker.endpoint_for(*identity) if identity is not None else self.broker.endpoint
            except OSError as exc:
                raise SpawnError(f"no broker socket for user {identity}: {exc}") from exc
            extra = {"FOUNDATION_BROKER": endpoint, "FOUNDATION_AGENT_TOKEN": token}
            if name in self.state_migrations:
                extra[STATE_MIGRATIONS] = self.state_migrations[name]
        if spec.ready == "notify" and self.notify is not None:
            extra["NOTIFY_SOCKET"] = str(self.notify.path)
            if spec.watchdog is not None:  # what sd_watchdog_enabled(3) reads to know it must ping
                extra["WATCHDOG_USEC"] = str(round(spec.watchdog * 1_000_000))
        return extra

    def _share_dirs_once(self, name: str, spec: WorkerSpec, uid: int, gid: int) -> None:
        if self._prepared.get(name) == (spec, uid, gid):
            return
        self._share_dirs(name, spec, uid, gid)
        self._prepared[name] = (spec, uid, gid)

    def _share_dirs(self, name: str, spec: WorkerSpec, uid: int, gid: int) -> None:
        """A child running as another user must reach its sockets and, for an agent, own its state directory.

        The runtime and state directories become traversable (0711: nothing in them can be listed, and each
        socket keeps its own mode: control and broker 0600, notify 0666 behind a credential check). The agent's
        own state directory is handed to its user; files a root run left there are handed over first, while the
        directory is still root's, so nothing the user planted there can be followed.
        """
        try:
            for directory in (self.runtime_dir, self.state_dir) if spec.agent else (self.runtime_dir,):
                if directory.stat().st_uid == os.geteuid():
                    directory.chmod(directory.stat().st_mode & 0o7777 | 0o711)
            if spec.agent:
                self._hand_over_state_dir(name, uid, gid)
        except OSError as exc:
            raise SpawnError(f"cannot share the runtime or state directory with user {uid}: {exc}") from exc

    def _hand_over_state_dir(self, name: str, uid: int, gid: int) -> None:
        agents_dir = agent_state_path(self.state_dir, name).parent
        agents_dir.mkdir(mode=0o711, exist_ok=True)
        agents_dir.chmod(0o711)
        own = agent_state_path(self.state_dir, name)
        if not own.exists():
            own.mkdir(mode=0o700)
            fsync_dir(agents_dir)  # the agent cannot (it may not read agents_dir): its directory entry is durable
        owner = own.lstat().st_uid
        if owner == uid:
            return
        if owner != os.geteuid():  # another user's: what it left there is not ours to follow or hand on
            raise SpawnError(f"{own} belongs to uid {owner}, not to the agent's user {uid}: chown it by hand")
        for entry in own.iterdir():
            os.chown(entry, uid, gid, follow_symlinks=False)
        os.chown(own, uid, gid, follow_symlinks=False)
