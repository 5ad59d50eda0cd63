"""The host-wide resilience services, the daemon's side (DESIGN 3.7, issue 14): circuit breakers, rate limits, retry
budgets, the error tracker and service discovery, shared by every agent on the host.

    agent (agents/resilience.py) ──svc {ref, op, args}──> broker ──> Resilience.on_svc ──> reply {ref, body|error}
        breaker.permit · limit.acquire · retry.permit · discovery.register / unregister / lookup
    agent ──svc_cast report {breakers, trials, errors}──> on_report ──> Breaker.record / trial_done, budgets, tracker
    a breaker's Change ──> event breaker_changed (obs) ──> push "breaker" to the agents that used it
                       └─> BreakerStore (LMDB, <state dir>/resilience): open/isolated/half-open survive a restart
                       └─> a timer at the breaker's next deadline (open -> half-open, an expired trial)
    control verbs breakers, breaker, limits, services, errors ──> describe / operate

The decisions are the pure cores' (daemon/core/resilience); this module holds them by name, feeds them the loop's
clock, and carries their changes out. Settings come from ``[resilience]`` of the config in force: a reload that
changes them applies to the next decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import orjson

from daemon.broker.peers import Session
from daemon.core.resilience.breaker import Breaker, BreakerState, Change
from daemon.core.resilience.limiter import RetryBudget, TokenBucket
from daemon.core.resilience.settings import NAME_RE, ResilienceConfig
from daemon.core.resilience.tracker import ErrorTracker
from daemon.core.states import State
from daemon.core.tree import Worker
from daemon.shell.loop import TimerHandle
from ipc.errors import ErrorCode, FoundationError, from_exception

log = logging.getLogger("foundationd.resilience")

OPS = ("open", "close", "isolate", "reset")
MAX_BREAKERS = 10_000


class BreakerStore:
    """Breakers that are not closed, by name, in one small LMDB environment; written at each transition (rare).
    ``sync=False``: a transition is in the page cache when the write returns, so it survives the daemon's SIGKILL;
    only a crash of the host may lose the last ones, and then a breaker starts closed again."""

    def __init__(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=16 << 20, subdir=True, sync=False, metasync=False, max_dbs=0)

    def load(self) -> dict[str, dict[str, Any]]:
        with self._env.begin() as txn:
            return {bytes(k).decode(): orjson.loads(bytes(v)) for k, v in txn.cursor()}

    def put(self, name: str, record: dict[str, Any] | None) -> None:
        with self._env.begin(write=True) as txn:
            if record is None:
                txn.delete(name.encode())
            else:
                txn.put(name.encode(), orjson.dumps(record))

    def close(self) -> None:
        self._env.close()


class Resilience:
    def __init__(self, app: Any) -> None:
        """``app``: the daemon (its loop, tree, config, broker once it runs, and ``obs`` for events)."""
        self.app = app
        self.clock = app.loop.clock
        self.breakers: dict[str, Breaker] = {}
        self.limits: dict[str, TokenBucket] = {}
        self.budgets: dict[str, RetryBudget] = {}
        self.tracker = ErrorTracker()
        self.registry: dict[str, dict[str, Any]] = {}  # agent -> {"pid", "capabilities": {cap: meta}, "breaker"}
        self.subscribers: dict[str, set[str]] = {}  # breaker -> agents that used it (pushed its changes)
        self._timers: dict[str, TimerHandle] = {}
        self._config: ResilienceConfig | None = None
        self.frames = {"svc": self.on_svc, "svc_cast": self.on_svc_cast}  # the broker's new frame kinds
        self._ops = {"breaker.permit": self._permit, "limit.acquire": self._acquire, "retry.permit": self._retry,
                     "discovery.register": self._register, "discovery.unregister": self._unregister,
                     "discovery.lookup": self._lookup}
        self.store: BreakerStore | None = None
        try:
            self.store = BreakerStore(Path(app.state_dir) / "resilience")
            self._restore(self.store.load())
        except (OSError, lmdb.Error) as exc:
            log.error("breaker states will not survive a restart: %s", from_exception(exc, "resilience store"))  # noqa: TRY400

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- settings ----

    @property
    def config(self) -> ResilienceConfig:
        current: ResilienceConfig = self.app.config.resilience
        if current is not self._config:  # the first use, or a reload: existing ones take the new settings
            self._config = current
            for name, breaker in self.breakers.items():
                breaker.configure(current.breaker_for(name))
            for name, bucket in list(self.limits.items()):
                if name in current.limits:
                    bucket.configure(current.limits[name])
                else:
                    del self.limits[name]
            for budget in self.budgets.values():
                budget.configure(current.retry_budget)
            self.tracker.window, self.tracker.thresholds = current.alert_window, dict(current.alerts)
        return current

    def breaker(self, name: str) -> Breaker:
        breaker = self.breakers.get(name)
        if breaker is None:
            if not NAME_RE.fullmatch(name):
                raise FoundationError(ErrorCode.BAD_REQUEST, f"{name!r} is not a breaker name (letters, digits and "
                                      "_ . : / -, up to 128)")
            if len(self.breakers) >= MAX_BREAKERS:
                raise FoundationError(ErrorCode.TOO_LARGE, f"more than {MAX_BREAKERS} breakers")
            breaker = self.breakers[name] = Breaker(name, self.config.breaker_for(name), changed_at=self.clock())
        else:
            _ = self.config
        return breaker

    # ---- frames from agents ----

    def on_svc(self, session: Session, msg: dict[str, Any]) -> None:
        broker = self.app.broker
        op = self._ops.get(msg["op"])
        try:
            if op is None:
                raise FoundationError(ErrorCode.BAD_REQUEST, f"unknown service operation {msg['op']!r}")
            body = op(session, msg["args"])
        except FoundationError as err:
            broker.answer(session, "reply", ref=msg["ref"], error=err.to_wire())
            return
        except Exception as exc:  # a bug: the agent still gets its answer (it waits for this ref); the daemon goes on
            log.exception("resilience: %s from %s failed", msg["op"], session.name)
            err = FoundationError(ErrorCode.INTERNAL, repr(exc))
            broker.answer(session, "reply", ref=msg["ref"], error=err.to_wire())
            return
        broker.answer(session, "reply", ref=msg["ref"], body=body)

    def on_svc_cast(self, session: Session, msg: dict[str, Any]) -> None:
        if msg["op"] == "report":
            self.report(session.name or "-", msg["args"])

    def report(self, agent: str, args: dict[str, Any]) -> None:
        now = self.clock()
        for name, counts in (args.get("breakers") or {}).items():
            calls, failures, slow = (int(x) for x in counts[:3])
            self._apply(self.breaker(name).record(now, calls, failures, slow))
            self._budget(name).deposit(now, calls)
        for name, token, ok in args.get("trials") or []:
            self._budget(name).deposit(now, 1)
            self._apply(self.breaker(name).trial_done(now, int(token), bool(ok)))
        for code, category, dependency, message in args.get("errors") or []:
            alerts = self.tracker.report(now, str(code), str(category), agent, message=str(message))
            for alert in alerts:
                self.app.obs.publish("alert", source="errors", key=alert.key, count=alert.count,
                                     threshold=alert.threshold, window=alert.window, agent=agent,
                                     dependency=dependency or None)

    def _permit(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        name = _name(args)
        breaker = self.breaker(name)
        if session.name is not None:
            self.subscribers.setdefault(name, set()).add(session.name)
        permit, changes = breaker.permit(self.clock())
        self._apply(changes)
        return {**self._view(breaker), "allowed": permit.allowed, "trial": permit.trial,
                "retry_after": round(permit.retry_after, 3)}

    def _acquire(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        name = _name(args)
        tokens = args.get("tokens", 1)
        if isinstance(tokens, bool) or not isinstance(tokens, int | float) or tokens <= 0:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'tokens' must be a positive number")
        bucket = self._bucket(name)
        if bucket.settings.lease:  # the agent keeps what is over ``tokens`` for lease_for seconds
            count, retry_after = bucket.take_lease(self.clock(), float(tokens))
            return {"granted": count > 0, "retry_after": round(retry_after, 4), "tokens": count,
                    "lease_for": bucket.settings.lease_for}
        granted, retry_after = bucket.take(self.clock(), float(tokens))
        return {"granted": granted, "retry_after": round(retry_after, 4)}

    def _retry(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        budget = self._budget(_name(args))
        allowed = budget.withdraw(self.clock())
        return {**budget.describe(self.clock()), "allowed": allowed}

    def _register(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        name = session.name
        capability = args.get("capability")
        if name is None:
            raise FoundationError(ErrorCode.BAD_REQUEST, "only agents may register capabilities")
        if not isinstance(capability, str) or not NAME_RE.fullmatch(capability):
            raise FoundationError(ErrorCode.BAD_REQUEST, "'capability' must be a name (letters, digits, _ . : / -)")
        breaker = args.get("breaker") or name
        if not isinstance(breaker, str):
            raise FoundationError(ErrorCode.BAD_REQUEST, "'breaker' must be a breaker's name")
        pid = self._pid(name)
        entry = self.registry.get(name)
        if entry is None or entry["pid"] != pid:  # a new incarnation starts afresh
            entry = self.registry[name] = {"pid": pid, "capabilities": {}, "breaker": breaker}
        entry["breaker"] = breaker
        entry["capabilities"][capability] = args.get("meta") if isinstance(args.get("meta"), dict) else {}
        return {"name": name, "capability": capability}

    def _unregister(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        entry = self.registry.get(session.name or "")
        if entry is not None:
            entry["capabilities"].pop(args.get("capability"), None)
        return {}

    def _lookup(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        capability = args.get("capability")
        return {"services": [{"name": s["name"], "pid": s["pid"], "meta": s["meta"].get(capability, {}),
                              "offers": s["meta"]}  # every capability with its meta (the cluster registry's)
                             for s in self.services(capability if isinstance(capability, str) else None)]}

    # ---- changes out ----

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            breaker = self.breakers[change.name]
            log.log(logging.WARNING if change.new is not BreakerState.CLOSED else logging.INFO,
                    "breaker %s: %s -> %s (%s)", change.name, change.old, change.new, change.reason)
            self.app.obs.publish("breaker_changed", name=change.name, old=str(change.old), new=str(change.new),
                                 reason=change.reason)
            view = self._view(breaker)
            broker = self.app.broker
            if broker is not None:
                for agent in list(self.subscribers.get(change.name, ())):
                    if not broker.push(agent, "breaker", **view):
                        self.subscribers[change.name].discard(agent)
            self._persist(breaker)
            self._arm(breaker)

    def _view(self, breaker: Breaker) -> dict[str, Any]:
        return {"name": breaker.name, "state": str(breaker.state), "open_until": breaker.open_until,
                "slow_call_duration": breaker.settings.slow_call_duration}

    def _arm(self, breaker: Breaker) -> None:
        old = self._timers.pop(breaker.name, None)
        if old is not None:
            old.cancel()
        deadline = breaker.next_deadline()
        if deadline is not None:
            self._timers[breaker.name] = self.app.loop.call_later(max(0.0, deadline - self.clock()) + 0.001,
                                                                  lambda: self._due(breaker.name))

    def _due(self, name: str) -> None:
        self._timers.pop(name, None)
        breaker = self.breakers.get(name)
        if breaker is not None:
            self._apply(breaker.tick(self.clock()))

    def _persist(self, breaker: Breaker) -> None:
        if self.store is None:
            return
        record = None
        if breaker.state is not BreakerState.CLOSED:
            record = {"state": str(breaker.state), "open_until_wall": time.time() + breaker.open_until - self.clock()}
        try:
            self.store.put(breaker.name, record)
        except lmdb.Error as exc:
            log.error("breaker %s: could not record its state: %s", breaker.name, exc)  # noqa: TRY400

    def _restore(self, records: dict[str, dict[str, Any]]) -> None:
        now = self.clock()
        for name, record in records.items():
            try:
                state = BreakerState(record["state"])
            except (KeyError, ValueError):
                continue
            breaker = self.breakers[name] = Breaker(name, changed_at=now)
            remaining = float(record.get("open_until_wall", 0.0)) - time.time()
            breaker.restore(now, state, remaining)
            log.info("breaker %s: %s, as before the restart", name, state)
        # (settings and timers once the config is known: at the first use, or right after the loop starts)
        if self.breakers:
            self.app.loop.call_later(0, self._after_restore)

    def _after_restore(self) -> None:
        _ = self.config
        for breaker in self.breakers.values():
            self._apply(breaker.tick(self.clock()))
            self._arm(breaker)

    def _bucket(self, name: str) -> TokenBucket:
        bucket = self.limits.get(name)
        if bucket is None:
            settings = self.config.limits.get(name)
            if settings is None:
                raise FoundationError(ErrorCode.NO_SUCH_LIMIT, f"no rate limit named {name!r} (add "
                                      f"[resilience.limits.{name}] with rate and burst to the config)")
            bucket = self.limits[name] = TokenBucket(name, settings)
        return bucket

    def _budget(self, name: str) -> RetryBudget:
        budget = self.budgets.get(name)
        if budget is None:
            budget = self.budgets[name] = RetryBudget(self.config.retry_budget)
        return budget

    def _pid(self, name: str) -> int | None:
        node = self.app.tree.find_quiet(name)
        return node.pid if isinstance(node, Worker) else None

    # ---- what the verbs ask ----

    def operate(self, name: str, op: str) -> dict[str, Any]:
        if op not in OPS:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"unknown operation {op!r} (one of {', '.join(OPS)})")
        breaker = self.breaker(name)
        self._apply(breaker.operate(self.clock(), op))
        return breaker.describe(self.clock())

    def describe_breakers(self) -> list[dict[str, Any]]:
        now = self.clock()
        _ = self.config
        out = []
        for name in sorted(self.breakers):
            breaker = self.breakers[name]
            self._apply(breaker.tick(now))
            row = breaker.describe(now)
            budget = self.budgets.get(name)
            row["retry_budget"] = budget.describe(now) if budget is not None else None
            out.append(row)
        return out

    def describe_limits(self) -> list[dict[str, Any]]:
        now = self.clock()
        config = self.config
        return [(self.limits[name] if name in self.limits else TokenBucket(name, settings)).describe(now)
                for name, settings in sorted(config.limits.items())]

    def services(self, capability: str | None = None) -> list[dict[str, Any]]:
        """Registered agents that are healthy: running, connected, the same incarnation that registered, and their
        breaker not open or isolated."""
        broker = self.app.broker
        connected = set(broker.stats()["connected"]) if broker is not None else set()
        out = []
        for name, entry in sorted(self.registry.items()):
            node = self.app.tree.find_quiet(name)
            if not isinstance(node, Worker) or node.state is not State.RUNNING or node.pid != entry["pid"]:
                continue
            if name not in connected:
                continue
            breaker = self.breakers.get(entry["breaker"])
            if breaker is not None and breaker.state in (BreakerState.OPEN, BreakerState.ISOLATED):
                continue
            caps = entry["capabilities"]
            if capability is not None and capability not in caps:
                continue
            out.append({"name": name, "pid": entry["pid"], "capabilities": sorted(caps), "meta": caps,
                        "breaker": entry["breaker"]})
        return out

    def errors(self) -> dict[str, Any]:
        _ = self.config
        return {"window": self.tracker.window, "thresholds": self.tracker.thresholds,
                "groups": self.tracker.groups(self.clock())}

    def metrics(self) -> Iterator[Any]:
        """Prometheus families for daemon/services/metrics.py's collector (imported there, only when scraped)."""
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        state = GaugeMetricFamily("foundation_breaker_state", "1 for the state the circuit breaker is in",
                                  labels=["breaker", "state"])
        calls = CounterMetricFamily("foundation_breaker_calls", "Calls reported through the breaker, by outcome",
                                    labels=["breaker", "outcome"])
        opened = CounterMetricFamily("foundation_breaker_opened", "Times the breaker opened", labels=["breaker"])
        for name, breaker in sorted(self.breakers.items()):
            for s in BreakerState:
                state.add_metric([name, str(s)], 1 if breaker.state is s else 0)
            calls.add_metric([name, "failure"], breaker.failures)
            calls.add_metric([name, "success"], breaker.calls - breaker.failures)
            opened.add_metric([name], breaker.opened)
        grants = CounterMetricFamily("foundation_rate_limit_requests", "Rate limit requests, by outcome",
                                     labels=["limit", "outcome"])
        for name, bucket in sorted(self.limits.items()):
            grants.add_metric([name, "granted"], bucket.granted)
            grants.add_metric([name, "refused"], bucket.refused)
        yield from (state, calls, opened, grants)


def _name(args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'name' must be a non-empty string")
    return name
