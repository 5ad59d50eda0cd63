"""Observability, wired in one place (issue 13, DESIGN 3.9): App builds one ``Observability`` and tells it of each
batch of core events; everything else is connected here, so that daemon/app.py stays wiring of parts.

    App.on_core_events ──> EventStream.from_core ──┬──> ring + followers ──> ``events [--follow]``
    broker.on_rejected ──> publish(message_rejected)┤
    watchdog / heartbeat / max_memory kills ──> kill_cause (said on the child_exited that follows)
                                                    └──> RestartTracker ──> HistoryStore (LMDB) ──> ``history``
                                                                     └──> restarts by reason ──┐
    ``[metrics] listen`` ──> HttpServer (on the loop) ──/metrics──> Metrics (collected at scrape) <┘
    ``[dashboard] listen`` ──> HttpServer ──/, /stream──> Dashboard (sections, pushed while a page is open)
    ``doctor`` ──> Doctor (samples, a probe child, checks)
    workflow command steps (services/tasks.py), ``workflow run`` ──> publish(workflow_step) ──> steps by outcome

With ``[metrics]`` unset nothing is listening and prometheus_client is not even imported; with it set and nobody
scraping, the daemon still sleeps: the listening socket is one more descriptor in the loop's epoll set. The same
holds for ``[dashboard]``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import lmdb

from daemon.core.events import CoreEvent
from daemon.services.doctor import Doctor
from daemon.services.events import Event, EventStream
from daemon.services.history import HistoryStore, RestartTracker, history_path
from ipc.errors import FoundationError

if TYPE_CHECKING:
    from daemon.services.dashboard import Dashboard
    from daemon.services.http import HttpServer
    from daemon.services.metrics import Metrics

log = logging.getLogger("foundationd")


class Observability:
    def __init__(self, app: Any) -> None:
        """``app``: the daemon (daemon/app.py's App), built far enough to have its loop, tree and kill paths."""
        self.app = app
        self.stream = EventStream(time.time, app.loop.clock)
        self.tracker = RestartTracker()
        self.history: HistoryStore | None = None
        self.metrics: Metrics | None = None
        self.http: HttpServer | None = None
        self.metrics_error: str | None = None
        self.dashboard: Dashboard | None = None
        self.dashboard_http: HttpServer | None = None
        self.dashboard_error: str | None = None
        self.steps: dict[tuple[str, str], int] = {}  # workflow_step events by (phase, outcome or "")
        self.doctor = Doctor(app)
        self.stream.listeners.append(self._on_events)
        app.reports.on_kill = app.queries.on_kill = self.stream.kill_cause

    def start(self) -> None:
        """At the daemon's start, once the broker exists and before the tree boots."""
        app = self.app
        try:
            self.history = HistoryStore(history_path(app.state_dir))
        except (OSError, lmdb.Error) as exc:
            log.error("restart history unavailable (%s): restarts are not recorded", exc)  # noqa: TRY400
        if app.broker is not None:
            app.broker.on_rejected = self._rejected
        app.workflows.tasks.on_step = self.workflow_step
        if app.config.metrics_listen is not None:
            self.serve_metrics(app.config.metrics_listen)
        if app.config.dashboard_listen is not None:
            self.serve_dashboard(app.config.dashboard_listen)

    def metrics_text(self) -> bytes:
        """The Prometheus text format, now (the ``metrics`` verb; the registry is made at its first use)."""
        if self.metrics is None:
            from daemon.services.metrics import Metrics  # noqa: PLC0415 (prometheus_client only when used)

            self.metrics = Metrics(self)
        return self.metrics.text()

    def serve_metrics(self, listen: str) -> None:
        from daemon.services.http import HttpServer  # noqa: PLC0415 (prometheus_client only with metrics on)
        from daemon.services.metrics import Metrics  # noqa: PLC0415

        self.metrics = self.metrics or Metrics(self)
        try:
            self.http = HttpServer(self.app.loop, listen, self.metrics.route)
        except OSError as exc:
            self.metrics_error = f"cannot listen on {listen}: {exc.strerror or exc}"
            log.error("metrics: %s; foundationd runs on without them", self.metrics_error)  # noqa: TRY400
            return
        self.metrics_error = None
        log.info("metrics at http://%s/metrics", self.http.address)

    def serve_dashboard(self, listen: str) -> None:
        from daemon.services.dashboard import Dashboard  # noqa: PLC0415 (only with the dashboard on)
        from daemon.services.http import HttpServer  # noqa: PLC0415

        self.dashboard = Dashboard(self)
        try:
            self.dashboard_http = HttpServer(self.app.loop, listen, self.dashboard.route)
        except OSError as exc:
            self.dashboard_error = f"cannot listen on {listen}: {exc.strerror or exc}"
            log.error("dashboard: %s; foundationd runs on without it", self.dashboard_error)  # noqa: TRY400
            return
        log.info("dashboard at http://%s/", self.dashboard_http.address)

    def close(self) -> None:
        for server in (self.http, self.dashboard_http):
            if server is not None:
                server.close()
        self.http = self.dashboard_http = None
        if self.history is not None:
            self.history.close()
            self.history = None

    # ---- in ----

    def on_core_events(self, happened: list[CoreEvent]) -> None:
        self.stream.from_core(happened)

    def publish(self, type: str, **fields: Any) -> Event:
        """For services: one event into the stream (``workflow_step``, ``breaker_changed``, ...)."""
        return self.stream.publish(type, **fields)

    def workflow_step(self, phase: str, **fields: Any) -> None:
        """A workflow was run (``phase="run"``), or one of its command steps started or ended (with ``outcome``)."""
        self.publish("workflow_step", phase=phase, **fields)

    def _on_events(self, events: list[Event]) -> None:
        for event in events:
            if event["type"] == "workflow_step":
                key = (str(event.get("phase")), str(event.get("outcome") or ""))
                self.steps[key] = self.steps.get(key, 0) + 1
        records = self.tracker.feed(events)
        if records and self.history is not None:
            try:
                self.history.append(records)
            except lmdb.Error as exc:
                log.error("restart history: could not record %d restart(s): %s", len(records), exc)  # noqa: TRY400

    def _rejected(self, sender: str | None, to: str, error: FoundationError) -> None:
        self.stream.publish("message_rejected", sender=sender, to=to, code=str(error.code), message=error.message)

    # ---- out ----

    def describe(self) -> dict[str, Any]:
        """For ``status --json``: where metrics are served (the bound address: port 0 picks one)."""
        return {"metrics": self.http.address if self.http is not None else None, "metrics_error": self.metrics_error,
                "dashboard": self.dashboard_http.address if self.dashboard_http is not None else None,
                "dashboard_error": self.dashboard_error, "events": self.stream.seq}
