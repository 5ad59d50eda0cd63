"""``reload`` and SIGHUP: re-read the config and apply the difference; an invalid config changes nothing.

    config file ──> load_config ──> core.reload.diff ──> core.plan.check ──> PlanRunner ──> answer, READY=1

The answer (and READY=1 after RELOADING=1) comes once every touched child has settled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from daemon.config import ConfigError, DaemonConfig, load_config
from daemon.core import plan as plans
from daemon.core.reload import Plan, diff
from daemon.core.states import State
from daemon.core.tree import SupervisionTree
from daemon.services.plan_runner import PlanRunner
from ipc.errors import ErrorCode, FoundationError

log = logging.getLogger("foundationd")

Reply = Callable[[Any], Any]


class Announcer(Protocol):
    def reloading(self) -> None: ...
    def ready(self) -> None: ...


class Reloader:
    def __init__(
        self,
        *,
        tree: SupervisionTree,
        runner: PlanRunner,
        notifier: Announcer,
        config_path: str | None,
        is_ready: Callable[[], bool],
        adopt: Callable[[DaemonConfig], None],
    ) -> None:
        self._tree, self._runner, self._notifier = tree, runner, notifier
        self._config_path, self._is_ready, self._adopt = config_path, is_ready, adopt
        self.busy = False

    def reload(self, current: DaemonConfig, reply: Reply | None) -> None:
        tree = self._tree
        if self.busy or tree.shutting_down or tree.root.state is State.STOPPING:  # (root failing)
            err = FoundationError(ErrorCode.BUSY, "a reload or shutdown is in progress")
            log.warning("reload ignored: %s", err.message)
            if reply is not None:
                reply(err)
            return
        log.info("reloading %s", self._config_path or "the embedded config")
        # RELOADING=1 ... READY=1 only once started: before that, READY=1 means the whole tree is up.
        announced = self._is_ready()
        if announced:
            self._notifier.reloading()
        try:
            new = load_config(self._config_path)
            plan = diff(current.root, new.root)
            plans.check(plan, tree)
        except (ConfigError, FoundationError) as exc:
            log.error("reload refused, the running tree is unchanged: %s", exc)  # noqa: TRY400 (no traceback)
            if announced:
                self._notifier.ready()
            if reply is not None:
                reply(exc if isinstance(exc, FoundationError) else FoundationError(ErrorCode.INVALID_CONFIG, str(exc)))
            return
        self.busy = True
        self._runner.run(plans.phases(plan), lambda err: self._finish(new, plan, announced, reply, err))

    def _finish(self, new: DaemonConfig, plan: Plan, announced: bool, reply: Reply | None,
                err: FoundationError | None) -> None:
        self.busy = False
        if err is not None:
            log.error("reload stopped part-way: %s", err)
        else:
            self._adopt(new)
        if announced and not self._tree.shutting_down:  # no READY=1 after STOPPING=1
            self._notifier.ready()
        if err is not None:
            if reply is not None:
                reply(err)
            return
        summary = plan.summary()
        log.info("reloaded: %s", summary)
        if reply is not None:
            reply(summary)
