"""The daemon's side of workflows (DESIGN 3.6): the ``tasks`` supervisor's command steps and durable dynamic
children. Everything else of workflows lives in agents (coordinator, workflow processes, task agents): the daemon
only owns what must outlive them, the commands and the list of workflow processes to bring back after a crash."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.config import child_spec_from_dict
from daemon.core.protocol import Exited
from daemon.services.durable_children import DurableChildren
from daemon.services.tasks import Tasks

if TYPE_CHECKING:
    from daemon.app import App


class WorkflowSide:
    def __init__(self, app: App, state_dir: Path) -> None:
        self._app = app
        self.durable = DurableChildren(state_dir)
        self.tasks = Tasks(state_dir, app, app.logs.tail, app.loop.call_later, app.shell.signal)

    def booted(self) -> None:
        """After the tree's boot: the durable children come back, then commands lost with the last daemon are told."""
        self.tasks.broker = self._app.broker
        self.durable.restore(self._attach_again)
        self.tasks.recover()

    def exited(self, event: Exited) -> None:
        if self.tasks.owns(event.name):
            self.tasks.exited(event)

    def removed(self, name: str) -> None:
        self.durable.removed((name,))

    def close(self) -> None:
        self.tasks.close()
        self.durable.close()

    def _attach_again(self, parent: str, raw: dict[str, Any], ephemeral: bool) -> None:
        spec = child_spec_from_dict(raw, key="spec")
        self._app.apply(self._app.tree.attach(parent, spec, ephemeral=ephemeral))
