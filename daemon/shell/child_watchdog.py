"""What notify children say (sd_notify(3) fields) and their watchdogs, on the daemon's side.

    notify socket ──> ChildNotifySocket ──> ChildReports.on_notify(name, pid, fields)
                                              ├─ READY=1, EXTEND_TIMEOUT_USEC= ──> core events (Ready, ExtendTimeout)
                                              ├─ STATUS=, ERRNO=, EXIT_STATUS= ──> shown in status (``reported``)
                                              └─ WATCHDOG=1/trigger, WATCHDOG_USEC= ──> one timer per child ──> SIGKILL

A missed watchdog ends in SIGKILL; the core then restarts the child as after any crash. Values that do not parse
are ignored with a warning, field by field, so a confused child cannot confuse the daemon.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from daemon.core.protocol import Event, ExtendTimeout, Ready
from daemon.core.states import State
from daemon.core.tree import SupervisionTree, Worker
from daemon.shell.child_notify import ERRNO_MAX, EXIT_STATUS_MAX, USEC_MAX, parse_uint
from daemon.shell.loop import TimerHandle

log = logging.getLogger("foundationd")

CallLater = Callable[[float, Callable[[], None]], TimerHandle]


class ChildReports:
    """The notify children's reports and watchdog timers, kept per child name."""

    def __init__(
        self,
        tree: SupervisionTree,
        call_later: CallLater,
        kill: Callable[[int, int], None],
        feed: Callable[[Event], None],
    ) -> None:
        self._tree, self._call_later, self._kill, self._feed = tree, call_later, kill, feed
        # "status" (STATUS=, until the child exits), "errno" and "exit_status" (ERRNO=, EXIT_STATUS=, until the
        # child's next start, like last_exit).
        self.reported: dict[str, dict[str, Any]] = {}
        self._watchdogs: dict[str, TimerHandle] = {}
        self._watchdog_usec: dict[str, tuple[int, float]] = {}  # name -> (pid, interval) set by WATCHDOG_USEC=
        self.on_kill: Callable[[int, str], None] = lambda pid, cause: None  # (pid, "watchdog"): for the events

    def child_of(self, pgid: int) -> str | None:
        """The notify child whose group leader is ``pgid`` (the socket's credential check asks)."""
        for worker in self._tree.workers():
            if worker.pid == pgid and worker.spec.ready == "notify":
                return worker.name
        return None

    def on_notify(self, name: str, pid: int, fields: dict[str, str]) -> None:
        """One datagram of a notify child (its group leader is ``pid``)."""
        if "STATUS" in fields:
            self.reported.setdefault(name, {})["status"] = fields["STATUS"][:200]
        for key, maximum in (("ERRNO", ERRNO_MAX), ("EXIT_STATUS", EXIT_STATUS_MAX)):
            if key in fields:
                value = self._number(name, key, fields[key], maximum)
                if value is not None:
                    self.reported.setdefault(name, {})[key.lower()] = value
        if "EXTEND_TIMEOUT_USEC" in fields:
            usec = self._number(name, "EXTEND_TIMEOUT_USEC", fields["EXTEND_TIMEOUT_USEC"], USEC_MAX)
            if usec is not None:
                self._feed(ExtendTimeout(name, pid, usec / 1e6))
        if fields.get("READY") == "1":
            self._feed(Ready(name, pid))
            self._arm(name, pid)  # systemd arms a service's watchdog once it is started, too
        if "WATCHDOG_USEC" in fields:
            self._set_usec(name, pid, fields["WATCHDOG_USEC"])
        if fields.get("WATCHDOG") == "1":
            self._arm(name, pid)
        elif fields.get("WATCHDOG") == "trigger":
            self._fired(name, pid, "watchdog triggered; killing it (requested by the child)", timeout=False)
        if fields.get("STOPPING") == "1":
            log.info("%s says it is stopping (STOPPING=1)", name)

    def exited(self, name: str, start_error: str | None = None) -> None:
        """The child's current run ended: STATUS= and its watchdog go; ERRNO= and EXIT_STATUS= stay. A run that
        failed to start with a cause of its own (``start_error``) shows it as ``last_error``."""
        if start_error is not None:
            self.reported.setdefault(name, {})["last_error"] = start_error
        reported = self.reported.get(name)
        if reported is not None:
            reported.pop("status", None)
            if not reported:
                del self.reported[name]
        self._watchdog_usec.pop(name, None)
        watchdog = self._watchdogs.pop(name, None)
        if watchdog is not None:
            watchdog.cancel()

    def forget(self, name: str, *, keep_error: bool = False) -> None:
        """A new run starts (or the child is gone): what the last run reported is no longer true. A failed start's
        ``last_error`` stays across restarts (``keep_error``) until a start succeeds, so ``status`` shows why a
        crash-looping child does not come up."""
        reported = self.reported.pop(name, None)
        if keep_error and reported is not None and "last_error" in reported:
            self.reported[name] = {"last_error": reported["last_error"]}

    def started(self, name: str) -> None:
        reported = self.reported.get(name)
        if reported is not None and reported.pop("last_error", None) is not None and not reported:
            del self.reported[name]

    def with_reports(self, node: dict[str, Any]) -> dict[str, Any]:
        """Add what notify children reported to their status entries (no walk when none did: the walk costs a
        tenth of a status at 1,000 children)."""
        if not self.reported:
            return node
        if node["name"] in self.reported:
            node.update(self.reported[node["name"]])
        for child in node.get("children", ()):
            self.with_reports(child)
        return node

    def _number(self, name: str, key: str, value: str, maximum: int) -> int | None:
        number = parse_uint(value, maximum)
        if number is None:
            log.warning("%s sent %s=%r: not a whole number from 0 to %d; ignored", name, key, value[:40], maximum)
        return number

    def _arm(self, name: str, pid: int) -> None:
        """(Re)start the child's watchdog timer: ``watchdog`` seconds, or what the child set with WATCHDOG_USEC=."""
        node = self._tree.find_quiet(name)
        if not isinstance(node, Worker) or node.spec.watchdog is None or node.pid != pid:
            return
        old = self._watchdogs.pop(name, None)
        if old is not None:
            old.cancel()
        override = self._watchdog_usec.get(name)
        interval = override[1] if override is not None and override[0] == pid else node.spec.watchdog
        if interval == 0:  # WATCHDOG_USEC=0: the child turned its watchdog off
            return
        self._watchdogs[name] = self._call_later(
            interval, lambda: self._fired(name, pid, f"sent no WATCHDOG=1 for {interval:g}s; killing it")
        )

    def _fired(self, name: str, pid: int, why: str, *, timeout: bool = True) -> None:
        """A watchdog timeout, or WATCHDOG=trigger: SIGKILL, and the core restarts the child as after any crash."""
        node = self._tree.find_quiet(name)
        if not isinstance(node, Worker) or node.pid != pid:
            return
        timer = self._watchdogs.pop(name, None)
        if timer is not None:
            timer.cancel()
        if timeout and node.state is State.STOPPING:
            # As systemd stops a service's watchdog when its stop begins: the stop has its own SIGKILL deadline
            # (``shutdown``, which the child may extend), and a child busy stopping need not ping.
            log.debug("%s: watchdog ran out while it is being stopped; left to its stop", name)
            return
        log.warning("%s %s", name, why)
        self.on_kill(pid, "watchdog")
        self._kill(pid, signal.SIGKILL)

    def _set_usec(self, name: str, pid: int, value: str) -> None:
        """WATCHDOG_USEC=: the child's own watchdog interval from now on (this run only; 0 turns it off), as systemd
        does: the timer restarts with the new value. Only for a child with ``watchdog`` configured."""
        node = self._tree.find_quiet(name)
        if not isinstance(node, Worker) or node.pid != pid:
            return
        if node.spec.watchdog is None:
            log.debug("%s sent WATCHDOG_USEC= but has no watchdog configured; ignored", name)
            return
        usec = self._number(name, "WATCHDOG_USEC", value, USEC_MAX)
        if usec is None:
            return
        self._watchdog_usec[name] = (pid, usec / 1e6)
        log.info("%s set its watchdog to %s (WATCHDOG_USEC=%d)", name, f"{usec / 1e6:g}s" if usec else "off", usec)
        if name in self._watchdogs or node.state is State.RUNNING:
            self._arm(name, pid)
        # (still starting and not pinging yet: READY=1 arms it with the new value)


