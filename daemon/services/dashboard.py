"""The dashboard (DESIGN 3.9): ``[dashboard] listen = "127.0.0.1:9465"`` serves a read-only page of the daemon, live.

    browser ──GET /──────────────> dashboard.html (one file, script and style inline: no build step, no external asset)
            ──GET /stream────────> server-sent events, on the daemon's loop (daemon/services/http.py's Stream):
                                     ``snapshot``: every section + the last BACKLOG events, at once (and after a
                                     reconnect); then ``update``: the sections whose data changed + the new events
            ──GET /snapshot.json─> the same snapshot, once (scripts, tests)

    EventStream, broker counters ──(looked at after a loop turn, only while a page is open)──> changed?
        ──> call_later(COALESCE, push): one ``update`` to every open page, at most every COALESCE seconds

Nothing runs while nobody watches: no timer, no hook on the loop (``loop.after_turn`` is set only while a stream is
open), so an idle daemon with the dashboard on still wakes up 0 times a second; an open page costs a comparison after
each turn the daemon woke up for anyway, and one push after a change. No keep-alive: on loopback nothing times out.

A section is a small function: ``Section(name, title, data)``, where ``data()`` returns plain JSON-able data now,
or None while there is nothing to show (the page then shows ``placeholder``). The page renders a section with its
own renderer when it has one (``RENDER`` in dashboard.html) and as a table or JSON otherwise, so a service adds
itself to the page with one entry in ``sections()``. ``refresh`` limits a costly section to the pushes whose new
events concern it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from daemon import version
from daemon.services.events import Event
from daemon.services.http import Channel, Response, Stream

if TYPE_CHECKING:
    from daemon.services.observability import Observability

log = logging.getLogger("foundationd")

PAGE = Path(__file__).with_name("dashboard.html")
BACKLOG = 100  # events a page gets when it opens
MAX_PUSH = 500  # events in one update at most (a page that missed more is told to take a snapshot)
COALESCE = 0.2  # seconds: changes within this are pushed together
WORKFLOWS_SHOWN = 20
RESTARTS_SHOWN = 10
ALERTS_SHOWN = 10


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    data: Callable[[], Any]  # JSON-able data now; None: nothing yet (the page shows ``placeholder``)
    placeholder: str = ""
    refresh: Callable[[list[Event]], bool] | None = None  # recompute only when the new events say so (None: always)


def sections(obs: Observability) -> list[Section]:
    """The page, top to bottom."""
    app = obs.app

    def daemon() -> dict[str, Any]:
        return {"pid": os.getpid(), "version": version(), "uptime_s": round(app.loop.clock() - app.started_at, 1),
                "spawn": app.shell.spawn_path, "events": obs.stream.seq,
                "metrics": obs.http.address if obs.http is not None else None}

    def tree() -> dict[str, Any]:
        return app.reports.with_reports(app.tree.snapshot())  # type: ignore[no-any-return]

    def messaging() -> dict[str, Any] | None:
        if app.broker is None:
            return None
        stats = app.broker.stats()
        return {"counters": dict(app.broker.counters), "mailboxes": stats["mailboxes"],
                "pending_calls": stats["pending_calls"], "monitors": stats["monitors"],
                "connected": len(stats["connected"])}

    def workflows() -> dict[str, Any]:
        listing = app.workflows.listing()
        states: dict[str, int] = {}
        for record in listing:
            states[record["state"]] = states.get(record["state"], 0) + 1
        return {"total": len(listing), "states": states, "recent": listing[-WORKFLOWS_SHOWN:][::-1],
                "steps": {" ".join(filter(None, key)): count for key, count in sorted(obs.steps.items())}}

    def restarts() -> list[Event]:
        return obs.history.last(RESTARTS_SHOWN)[::-1] if obs.history is not None else []

    def flags() -> list[dict[str, Any]] | None:
        listing = app.flags.listing()["flags"] if getattr(app, "flags", None) is not None else []
        return [{"name": f["name"], "value": f["value"]} for f in listing] or None

    def stage() -> dict[str, Any] | None:
        return app.flags.migrations.brief() if getattr(app, "flags", None) is not None else None

    def breakers() -> list[dict[str, Any]] | None:
        service = getattr(app, "resilience", None)
        rows = service.describe_breakers() if service is not None else []
        return [{"name": r["name"], "state": r["state"], "open_for_s": r.get("open_for_s")} for r in rows] or None

    def alerts() -> list[Event] | None:
        return obs.stream.tail(ALERTS_SHOWN, lambda e: e.get("type") in ("alert", "rollback"))[::-1] or None

    return [
        Section("daemon", "foundationd", daemon),
        Section("tree", "Supervision tree", tree),
        Section("restarts", "Recent restarts", restarts, refresh=_about(("child_restarted", "child_parked",
                                                                         "supervisor_failed"))),
        Section("messaging", "Messaging", messaging, "no broker"),
        Section("workflows", "Workflows", workflows, refresh=_workflow_news),
        Section("flags", "Flags", flags, "no feature flag ([flags] in the config, or foundationctl flags)"),
        Section("stage", "Migration stage", stage, "no staged migration ([migration] in the config)"),
        Section("breakers", "Circuit breakers", breakers, "no circuit breaker yet (made at an agent's first call "
                "through one)"),
        Section("alerts", "Alerts", alerts, "no alert, no rollback"),
    ]


def _about(types: tuple[str, ...]) -> Callable[[list[Event]], bool]:
    return lambda events: any(e.get("type") in types for e in events)


def _workflow_news(events: list[Event]) -> bool:
    return any(e.get("type") == "workflow_step" or str(e.get("name", "")).startswith("workflow-") for e in events)


def allowed_host(host: str) -> bool:
    """The page answers to an address or ``localhost`` only: a web page whose own name resolves to 127.0.0.1 (DNS
    rebinding) sends its name as Host, and is refused."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Dashboard:
    def __init__(self, obs: Observability) -> None:
        self._obs = obs
        self._loop = obs.app.loop
        self._sections = sections(obs)
        self._page = PAGE.read_bytes()
        self._channels: list[Channel] = []
        self._sent: dict[str, bytes] = {}  # section -> its data as last pushed
        self._cache: dict[str, Any] = {}  # section with ``refresh`` -> its data as last computed
        self._seq = 0  # the last event pushed
        self._key: tuple[Any, ...] = ()
        self._timer: Any = None

    def add(self, section: Section) -> None:
        """For services: one more section, or in place of the section of the same name (a placeholder)."""
        names = [s.name for s in self._sections]
        if section.name in names:
            self._sections[names.index(section.name)] = section
        else:
            self._sections.append(section)
        self._cache.pop(section.name, None)

    @property
    def watchers(self) -> int:
        return len(self._channels)

    # ---- HTTP ----

    def route(self, path: str, headers: dict[str, str]) -> Response | Stream | None:
        if not allowed_host(headers.get("host", "")):
            return 403, "text/plain", b"the dashboard answers to its address or localhost only\n"
        if path == "/":
            return 200, "text/html; charset=utf-8", self._page
        if path == "/stream":
            return Stream("text/event-stream", self._opened)
        if path == "/snapshot.json":
            return 200, "application/json", orjson.dumps(self.snapshot(refresh_all=True))
        return None

    def snapshot(self, refresh_all: bool = False) -> dict[str, Any]:
        out = []
        for section in self._sections:
            data = self._data(section, None if refresh_all else [])
            out.append({"name": section.name, "title": section.title, "placeholder": section.placeholder,
                        "data": data})
        return {"ts": time.time(), "sections": out, "events": self._obs.stream.tail(BACKLOG)}

    def _data(self, section: Section, news: list[Event] | None) -> Any:
        """A section's data; one with ``refresh`` is recomputed only for news that concern it (None: always)."""
        if section.refresh is None:
            return section.data()
        if news is None or section.name not in self._cache or section.refresh(news):
            try:
                self._cache[section.name] = section.data()
            except Exception:  # a section's failure shows as its placeholder, never breaks the page
                log.exception("dashboard: section %s failed", section.name)
                self._cache[section.name] = None
        return self._cache[section.name]

    # ---- live ----

    def _opened(self, channel: Channel) -> None:
        snapshot = self.snapshot(refresh_all=not self._channels)
        if not self._channels:
            self._seq = self._obs.stream.seq
            self._sent = {s["name"]: orjson.dumps(s["data"]) for s in snapshot["sections"]}
            self._key = self._fingerprint()
            self._loop.after_turn = self._after_turn
        if channel.send(_sse("snapshot", snapshot)):
            self._channels.append(channel)
            channel.on_close = lambda: self._closed(channel)

    def _closed(self, channel: Channel) -> None:
        if channel in self._channels:
            self._channels.remove(channel)
        if not self._channels:
            self._loop.after_turn = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fingerprint(self) -> tuple[Any, ...]:
        broker = self._obs.app.broker
        return self._obs.stream.seq, tuple(broker.counters.values()) if broker is not None else ()

    def _after_turn(self) -> None:
        if self._timer is None and self._fingerprint() != self._key:
            self._timer = self._loop.call_later(COALESCE, self._push)

    def _push(self) -> None:
        self._timer = None
        self._key = self._fingerprint()
        stream = self._obs.stream
        missed = stream.seq - self._seq
        news = stream.tail(min(missed, MAX_PUSH))
        self._seq = stream.seq
        changed = {}
        for section in self._sections:
            data = self._data(section, news)
            encoded = orjson.dumps(data)
            if self._sent.get(section.name) != encoded:
                self._sent[section.name] = encoded
                changed[section.name] = data
        message = _sse("update", {"ts": time.time(), "sections": changed, "events": news,
                                  "gap": missed > MAX_PUSH})
        for channel in list(self._channels):
            channel.send(message)

    def close(self) -> None:
        for channel in list(self._channels):
            channel.close()


def _sse(kind: str, data: Any) -> bytes:
    """One server-sent event: ``event:`` and one ``data:`` line (JSON has no raw newline)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
