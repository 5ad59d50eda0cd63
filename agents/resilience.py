"""The agent's side of the host-wide resilience services (DESIGN 3.7): breakers, rate limits, retries with a budget,
service discovery. The decisions live in the daemon (daemon/services/resilience.py), shared by every agent on the
host; the protected call runs here, in the agent.

    guarded("payments", fn) ── view of "payments" cached here? ──closed──> fn() ──> outcome counted here
          │                       │ none yet / due for a trial                  └─ flushed as one svc_cast "report"
          │                       v                                               (after each batch of messages, at
          │               svc breaker.permit ──> daemon: allowed? trial token?     a heartbeat, at once on a failure)
          │                                        └─ subscribes: later changes come as "breaker" frames (pushed)
          └─ open (until T) or isolated: BreakerOpen at once, no round trip

A closed breaker costs a dict lookup, two clock reads and a counter: no frame per call. The daemon pushes every
change of a breaker this agent has used, so an open breaker is refused here within a frame's time of opening.

Errors are classified with ``ipc.errors.classify`` (the classifier workflows use too): ``business`` and ``validation``
errors are calls that succeeded as far as the breaker is concerned (the dependency answered), and are never retried;
an exception of no known kind counts as a failure (``internal``) but is not retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ipc.errors import NOT_COUNTED, ErrorCode, FoundationError, classify
from ipc.workflow_def import RetryPolicy, retryable

T = TypeVar("T")

FLUSH_EVERY = 0.05  # seconds: successes are batched at most this long while a handler runs
LOOK_EVERY = 0.01  # seconds: how often a long handler looks for pushed breaker changes


class BreakerOpen(FoundationError):
    def __init__(self, name: str, state: str, retry_after: float = 0.0) -> None:
        super().__init__(ErrorCode.BREAKER_OPEN, f"circuit breaker {name!r} is {state.replace('_', '-')}",
                         context={"breaker": name, "state": state, "retry_after": round(retry_after, 3)})


class Channel(Protocol):
    """What the client needs of the agent's runtime: a request, a one-way frame, a wait that keeps the agent alive,
    and a look at frames that have arrived (pushes)."""

    name: str

    def service(self, op: str, args: dict[str, Any], timeout: float = ...) -> Any: ...
    def service_cast(self, op: str, args: dict[str, Any]) -> None: ...
    def pause(self, seconds: float) -> None: ...
    def look(self) -> None: ...


class _View:
    __slots__ = ("open_until", "slow", "state")

    def __init__(self, state: str, open_until: float, slow: float) -> None:
        self.state, self.open_until, self.slow = state, open_until, slow


class ResilienceClient:
    def __init__(self, channel: Channel) -> None:
        self._ch = channel
        self._views: dict[str, _View] = {}
        self._counts: dict[str, list[int]] = {}  # name -> [calls, failures, slow] not yet reported
        self._trials: list[list[Any]] = []  # [name, token, ok]
        self._errors: list[list[Any]] = []  # [code, category, dependency, message]
        self._leases: dict[str, list[float]] = {}  # limit -> [tokens left, good until (monotonic)]
        self._http: dict[str, Any] = {}  # dependency -> agents.http.HttpDependency (made by Agent.http)
        self._flushed = time.monotonic()
        self._looked = self._flushed

    # ---- breakers ----

    def guarded(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        token = self._admit(name)
        start = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._outcome(name, token, time.monotonic() - start, exc)
            raise
        self._outcome(name, token, time.monotonic() - start, None)
        return result

    def breaker(self, name: str) -> Guard:
        return Guard(self, name)

    def refuse_if_open(self, name: str) -> None:
        """Raise BreakerOpen if what this agent knows of ``name`` already refuses a call (no round trip): e.g.
        before taking a rate limit's token for a call that would not be made."""
        view = self._views.get(name)
        if view is not None and view.state != "closed":
            now = time.monotonic()
            if view.state == "isolated" or (view.state == "open" and now < view.open_until):
                raise BreakerOpen(name, view.state, max(0.0, view.open_until - now))

    def _admit(self, name: str) -> int | None:
        """None: go ahead (closed); a token: go ahead as a half-open trial; raises BreakerOpen otherwise."""
        now = time.monotonic()
        if now - self._looked > LOOK_EVERY:
            self._looked = now
            self._ch.look()  # pushed changes that arrived while this handler ran
        view = self._views.get(name)
        if view is not None:
            if view.state == "closed":
                return None
            if view.state == "isolated" or (view.state == "open" and now < view.open_until):
                raise BreakerOpen(name, view.state, max(0.0, view.open_until - now))
        self.flush()  # what this agent saw so far counts before the daemon decides
        answer = self._ch.service("breaker.permit", {"name": name})
        self.on_push(answer)
        if not answer["allowed"]:
            raise BreakerOpen(name, answer["state"], float(answer.get("retry_after") or 0.0))
        return answer.get("trial")

    def _outcome(self, name: str, token: int | None, took: float, exc: BaseException | None) -> None:
        failed = False
        if exc is not None and isinstance(exc, Exception):
            shape = classify(exc, unknown="internal")
            failed = shape["category"] not in NOT_COUNTED
            if failed:
                self._errors.append([shape["code"], shape["category"], name, shape["message"][:200]])
        view = self._views.get(name)
        slow = view is not None and took > view.slow
        if token is not None:
            self._trials.append([name, token, not (failed or slow)])
            self.flush()
            return
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = [0, 0, 0]
        counts[0] += 1
        counts[1] += failed
        counts[2] += slow
        if failed or time.monotonic() - self._flushed > FLUSH_EVERY:
            self.flush()

    def report_error(self, exc: BaseException, dependency: str = "") -> None:
        """Count an error in the daemon's error tracker (``foundationctl errors``) without a breaker."""
        shape = classify(exc, unknown="internal")
        self._errors.append([shape["code"], shape["category"], dependency, shape["message"][:200]])
        self.flush()

    @property
    def pending(self) -> bool:
        return bool(self._counts or self._trials or self._errors)

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if not (self._counts or self._trials or self._errors):
            return
        args = {"breakers": self._counts, "trials": self._trials, "errors": self._errors}
        self._counts, self._trials, self._errors = {}, [], []
        self._ch.service_cast("report", args)

    def on_push(self, msg: dict[str, Any]) -> None:
        """A breaker's state, as the daemon pushed it (or answered a permit with it)."""
        self._views[msg["name"]] = _View(msg["state"], float(msg.get("open_until") or 0.0),
                                         float(msg.get("slow_call_duration") or 5.0))

    def state(self, name: str) -> str | None:
        """What this agent knows of breaker ``name`` (None before its first use)."""
        view = self._views.get(name)
        return view.state if view is not None else None

    # ---- rate limits ----

    def acquire(self, name: str, tokens: float = 1, wait: float = 10.0) -> None:
        """Take ``tokens`` from the host-wide limit ``name``, waiting up to ``wait`` seconds for them (the daemon
        says when there will be some); RATE_LIMITED if they do not come in time."""
        lease = self._leases.get(name)
        if lease is not None:  # tokens a previous grant added ([resilience.limits.NAME] lease), while good
            if lease[0] >= tokens and time.monotonic() < lease[1]:
                lease[0] -= tokens
                return
            del self._leases[name]
        deadline = time.monotonic() + wait
        while True:
            asked = time.monotonic()  # a lease runs from before the daemon granted it: never longer than it said
            answer = self._ch.service("limit.acquire", {"name": name, "tokens": tokens})
            if answer["granted"]:
                extra = float(answer.get("tokens") or tokens) - tokens
                if extra > 0:
                    self._leases[name] = [extra, asked + float(answer["lease_for"])]
                return
            after = float(answer["retry_after"])
            if after < 0 or time.monotonic() + after > deadline:
                raise FoundationError(ErrorCode.RATE_LIMITED, f"no {tokens:g} token(s) of limit {name!r} within "
                                      f"{wait:g}s", context={"limit": name, "retry_after": round(after, 3)})
            self._ch.pause(after)

    # ---- retries ----

    def retry(self, name: str, fn: Callable[..., T], *args: Any, policy: RetryPolicy | None = None,
              **kwargs: Any) -> T:
        """Call ``fn`` through breaker ``name``; retry what deserves it (``ipc.workflow_def.retryable``: the category
        infrastructure, timeout or unavailable, a code not in ``non_retryable_errors``) after the policy's backoff,
        while the host-wide retry budget of ``name`` allows. The last error is raised; a refused retry raises
        RETRY_BUDGET_EXHAUSTED with the last error as its cause."""
        policy = policy or RetryPolicy()
        attempts = 0
        while True:
            attempts += 1
            try:
                return self.guarded(name, fn, *args, **kwargs)
            except Exception as exc:
                if isinstance(exc, BreakerOpen) or not policy.allows(attempts) or not retryable(classify(exc), policy):
                    raise
                self.flush()  # the attempts so far are deposits of the budget
                answer = self._ch.service("retry.permit", {"name": name})
                if not answer["allowed"]:
                    raise FoundationError(ErrorCode.RETRY_BUDGET_EXHAUSTED, f"retries to {name!r} are over their "
                                          "budget; not retried", context={"dependency": name,
                                                                          "attempts": attempts}) from exc
                self._ch.pause(policy.delay(attempts))

    # ---- discovery ----

    def register(self, capability: str, breaker: str | None = None, **meta: Any) -> None:
        """Offer ``capability`` (until this process ends); left out of lookups while this agent does not run or the
        breaker ``breaker`` (default: the agent's name) is open."""
        self._ch.service("discovery.register", {"capability": capability, "breaker": breaker, "meta": meta})

    def unregister(self, capability: str) -> None:
        self._ch.service("discovery.unregister", {"capability": capability})

    def discover(self, capability: str) -> list[dict[str, Any]]:
        """The healthy agents that registered ``capability``: ``[{"name", "pid", "meta"}]``."""
        return list(self._ch.service("discovery.lookup", {"capability": capability})["services"])


class Guard:
    """``with agent.breaker("payments"): ...``: the block is the protected call."""

    __slots__ = ("_client", "_name", "_start", "_token")

    def __init__(self, client: ResilienceClient, name: str) -> None:
        self._client, self._name = client, name
        self._token: int | None = None
        self._start = 0.0

    def __enter__(self) -> Guard:
        self._token = self._client._admit(self._name)
        self._start = time.monotonic()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self._client._outcome(self._name, self._token, time.monotonic() - self._start, exc)


class LocalChannel:
    """For agents under ``agents.testing.AgentHarness``: no daemon, so every breaker stays closed, every limit grants,
    every retry is in budget; registrations are recorded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.registered: dict[str, dict[str, Any]] = {}
        self.paused = 0.0

    def service(self, op: str, args: dict[str, Any], timeout: float = 5.0) -> Any:
        if op == "breaker.permit":
            return {"name": args["name"], "state": "closed", "allowed": True, "trial": None}
        if op == "discovery.register":
            self.registered[args["capability"]] = args["meta"]
            return {}
        if op == "discovery.unregister":
            self.registered.pop(args["capability"], None)
            return {}
        if op == "discovery.lookup":
            found = args["capability"] in self.registered
            return {"services": [{"name": self.name, "pid": None, "meta": self.registered[args["capability"]]}]
                    if found else []}
        return {"granted": True, "allowed": True, "retry_after": 0.0}

    def service_cast(self, op: str, args: dict[str, Any]) -> None:
        pass

    def pause(self, seconds: float) -> None:
        self.paused += seconds

    def look(self) -> None:
        pass
