"""Prometheus metrics (DESIGN 3.9): ``[metrics] listen = "127.0.0.1:9464"`` serves ``/metrics`` from the daemon's loop.

    scrape ──> HttpServer (daemon/services/http.py, on the loop) ──> generate_latest(registry)
                                                                        │ collect(), now
                                                                        v
    FoundationCollector: the tree (states, start times, restarts by reason, intensity), one /proc pass (CPU, RSS,
    fds of each child's process group), the broker's counters, the event counts, the loop's lag histogram

A custom collector as in prometheus client_python's docs: nothing is counted or read between scrapes, so with
metrics on and nobody scraping the daemon still wakes up 0 times a second. One registry, the daemon's own (not the
client library's global one, and not its multiprocess mode). Names follow Prometheus practice: ``foundation_``,
base units, ``_total`` for counters, children labelled by name (never pid, whose values are unbounded).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from daemon import version
from daemon.broker.latency import BUCKETS
from daemon.core.states import State
from daemon.core.tree import AnyNode, Supervisor, Worker
from daemon.shell import procfs
from daemon.shell.loop import TURN_BUCKETS

if TYPE_CHECKING:
    from daemon.services.observability import Observability

STATES = tuple(str(s) for s in State)


def walk(node: AnyNode) -> list[AnyNode]:
    """``node`` and every node under it, depth first in start order."""
    if isinstance(node, Supervisor):
        return [node, *(n for child in node.children for n in walk(child))]
    return [node]


class FoundationCollector:
    def __init__(self, obs: Observability) -> None:
        self._obs = obs

    def collect(self) -> Iterator[Metric]:
        obs, app = self._obs, self._obs.app
        wall_offset = time.time() - app.loop.clock()
        yield from self._daemon(app, wall_offset)
        yield from self._tree(app, wall_offset)
        yield from self._usage(app)
        restarts = CounterMetricFamily("foundation_child_restarts", "Restarts of a child since the daemon started, "
                                       "by why it went down (crash, watchdog, heartbeat, max_memory, intensity, "
                                       "strategy)", labels=["child", "reason"])
        counted = dict(obs.tracker.restarts)
        for node in walk(app.tree.root):
            if node.parent is not None and not any(child == node.name for child, _ in counted):
                counted[(node.name, "crash")] = 0  # every child has a series from the start (rate() needs one)
        for (child, reason), count in sorted(counted.items()):
            restarts.add_metric([child, reason], count)
        yield restarts
        events = CounterMetricFamily("foundation_events", "Events in the event stream, by type", labels=["type"])
        for kind, count in sorted(obs.stream.counts.items()):
            events.add_metric([kind], count)
        yield events
        if app.broker is not None:
            yield from self._broker(app.broker, app.loop.clock())
        yield from self._workflows(obs.steps)
        yield self._loop_lag(app)
        if getattr(app, "resilience", None) is not None:  # breakers and rate limits (daemon/services/resilience.py)
            yield from app.resilience.metrics()

    @staticmethod
    def _workflows(steps: dict[tuple[str, str], int]) -> Iterator[Metric]:
        yield CounterMetricFamily("foundation_workflow_runs", "Workflows run through the control socket",
                                  value=steps.get(("run", ""), 0))
        yield CounterMetricFamily("foundation_workflow_steps_started", "Workflow command steps the daemon started",
                                  value=steps.get(("started", ""), 0))
        ended = CounterMetricFamily("foundation_workflow_steps_finished", "Workflow command steps that ended, by "
                                    "outcome (ok, exit_status, killed, timeout, cancelled, spawn_failed, lost)",
                                    labels=["outcome"])
        ended.add_metric(["ok"], steps.get(("ended", "ok"), 0))  # (a series from the start: rate() needs one)
        for (phase, outcome), count in sorted(steps.items()):
            if phase == "ended" and outcome != "ok":
                ended.add_metric([outcome], count)
        yield ended

    @staticmethod
    def _daemon(app: Any, wall_offset: float) -> Iterator[Metric]:
        info = GaugeMetricFamily("foundation_daemon_info", "The daemon's version and how it starts children",
                                 labels=["version", "spawn"])
        info.add_metric([version(), app.shell.spawn_path], 1)
        yield info
        yield GaugeMetricFamily("foundation_daemon_start_time_seconds", "When the daemon started (Unix time)",
                                value=round(app.started_at + wall_offset, 3))

    @staticmethod
    def _tree(app: Any, wall_offset: float) -> Iterator[Metric]:
        state = GaugeMetricFamily("foundation_child_state", "1 for the state the child (worker or supervisor) is in",
                                  labels=["child", "type", "state"])
        started = GaugeMetricFamily("foundation_child_start_time_seconds", "When the running worker started (Unix "
                                    "time)", labels=["child"])
        window = GaugeMetricFamily("foundation_supervisor_restarts_in_period", "Restarts a supervisor counts toward "
                                   "its intensity now (within its period)", labels=["supervisor"])
        allowed = GaugeMetricFamily("foundation_supervisor_intensity", "Restarts a supervisor allows within its "
                                    "period; one more and it fails", labels=["supervisor"])
        now = app.loop.clock()
        for node in walk(app.tree.root):
            kind = "supervisor" if isinstance(node, Supervisor) else "worker"
            for name in STATES:
                state.add_metric([node.name, kind, name], 1 if str(node.state) == name else 0)
            if isinstance(node, Worker) and node.pid is not None and node.started_at is not None:
                started.add_metric([node.name], round(node.started_at + wall_offset, 3))
            if isinstance(node, Supervisor):
                window.add_metric([node.name], sum(1 for t in node.history if t > now - node.spec.period))
                allowed.add_metric([node.name], node.spec.intensity)
        yield from (state, started, window, allowed)

    @staticmethod
    def _usage(app: Any) -> Iterator[Metric]:
        """CPU, memory and descriptors of each running worker's process group: one /proc pass, only while scraped."""
        groups = {w.pid: w.name for w in app.tree.workers() if w.pid is not None}
        usage = procfs.group_usage(procfs.scan().values(), set(groups)) if groups else {}
        cpu = CounterMetricFamily("foundation_child_cpu_seconds", "CPU time of the worker's process group "
                                  "(its processes now, and the children they reaped)", labels=["child"])
        rss = GaugeMetricFamily("foundation_child_resident_memory_bytes", "Resident memory of the worker's process "
                                "group", labels=["child"])
        fds = GaugeMetricFamily("foundation_child_open_fds", "Open file descriptors in the worker's process group",
                                labels=["child"])
        for pgid, (seconds, resident, descriptors) in sorted(usage.items(), key=lambda item: groups[item[0]]):
            cpu.add_metric([groups[pgid]], seconds)
            rss.add_metric([groups[pgid]], resident)
            fds.add_metric([groups[pgid]], descriptors)
        yield from (cpu, rss, fds)

    @staticmethod
    def _broker(broker: Any, now: float) -> Iterator[Metric]:
        helps = {
            "accepted": "Messages durably accepted (casts on disk, calls and ticks queued)",
            "delivered": "Messages sent to their recipient (a redelivery counts again)",
            "redelivered": "Messages in flight to a recipient that went down, to be delivered again",
            "done": "Messages their recipient said it had handled",
            "rejected": "Messages refused (no such agent, mailbox full, too large, not persisted)",
        }
        for key, text in helps.items():
            yield CounterMetricFamily(f"foundation_broker_messages_{key}", text, value=broker.counters[key])
        stats = broker.stats()
        queued = GaugeMetricFamily("foundation_broker_mailbox_messages", "Messages queued or in flight to an agent",
                                   labels=["child"])
        for name, count in sorted(stats["mailboxes"].items()):
            queued.add_metric([name], count)
        yield queued
        yield GaugeMetricFamily("foundation_broker_pending_calls", "Calls waiting for their reply",
                                value=stats["pending_calls"])
        yield GaugeMetricFamily("foundation_broker_monitors", "Monitors agents hold on other agents",
                                value=stats["monitors"])
        yield GaugeMetricFamily("foundation_broker_connected_agents", "Agents connected to the broker",
                                value=len(stats["connected"]))
        yield GaugeMetricFamily("foundation_broker_outbox_messages", "Messages queued or in flight to any agent",
                                value=sum(stats["mailboxes"].values()))
        oldest = broker.oldest()
        yield GaugeMetricFamily("foundation_broker_outbox_oldest_age_seconds", "How long the oldest message queued "
                                "or in flight has waited since it was accepted (0: none)",
                                value=round(max(0.0, now - oldest), 6) if oldest is not None else 0.0)
        yield _histogram("foundation_broker_accept_latency_seconds", "From a message's admission to the group "
                         "commit that made it durable (its receipt)", BUCKETS, broker.accept_latency)
        yield _histogram("foundation_broker_handling_latency_seconds", "From a message's delivery to its recipient's "
                         "done (handled, its state committed)", BUCKETS, broker.handle_latency)

    @staticmethod
    def _loop_lag(app: Any) -> Metric:
        return _histogram("foundation_loop_lag_seconds", "How long each turn of the daemon's loop was busy: the most "
                          "a ready event waited to be looked at", TURN_BUCKETS, app.loop.turns)


def _histogram(name: str, text: str, bounds: tuple[float, ...], observed: Any) -> Metric:
    """A histogram family from per-bucket counts (``observed.counts``, one more than ``bounds``) and ``.total``."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), observed.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=observed.total)


class Metrics:
    """The daemon's one registry, and the text a scrape gets."""

    def __init__(self, obs: Observability) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FoundationCollector(obs))
        ProcessCollector(namespace="foundation_daemon", registry=self.registry)  # the daemon's own CPU, memory, fds

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def route(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes] | None:
        if path == "/metrics":  # the format the scraper asks for (Accept:), as prometheus_client's own server does
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return 200, content_type, encoder(self.registry)
        if path == "/":
            return 200, "text/plain; charset=utf-8", b"foundationd: metrics at /metrics\n"
        return None
