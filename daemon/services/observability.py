"""Observability, wired in one place (issue 13, DESIGN 3.9): App builds one ``Observability`` and tells it of each
batch of core events; everything else is connected here, so that daemon/app.py stays wiring of parts.

    App.on_core_events ──> EventStream.from_core ──┬──> ring + followers ──> ``events [--follow]``
    broker.on_rejected ──> publish(message_rejected)┤
    watchdog / heartbeat / max_memory kills ──> kill_cause (said on the child_exited that follows)
                                                    └──> RestartTracker ──> HistoryStore (LMDB) ──> ``history``
                                                                     └──> restarts by reason ──┐
    ``[metrics] listen`` ──> HttpServer (on the loop) ──/metrics──> Metrics (collected at scrape) <┘
    ``doctor`` ──> Doctor (samples, a probe child, checks)

With ``[metrics]`` unset nothing is listening and prometheus_client is not even imported; with it set and nobody
scraping, the daemon still sleeps: the listening socket is one more descriptor in the loop's epoll set.
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
        if app.config.metrics_listen is not None:
            self.serve_metrics(app.config.metrics_listen)

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

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.history is not None:
            self.history.close()
            self.history = None

    # ---- in ----

    def on_core_events(self, happened: list[CoreEvent]) -> None:
        self.stream.from_core(happened)

    def publish(self, type: str, **fields: Any) -> Event:
        """For services: one event into the stream (``workflow_step``, ``breaker_changed``, ...)."""
        return self.stream.publish(type, **fields)

    def _on_events(self, events: list[Event]) -> None:
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
                "events": self.stream.seq}
