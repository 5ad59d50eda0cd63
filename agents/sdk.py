"""The agent SDK: subclass ``Agent``, name it in the config as ``agent = "module:Class"``.

    class Counter(Agent):
        def init(self):                      return {"count": 0}
        def handle_cast(self, msg, state):   return {"count": state["count"] + msg["add"]}
        def handle_call(self, msg, state):   return {"count": state["count"]}, state

The runtime (agents/runtime.py) loads the last committed state (or calls ``init``), calls ``mount``,
then hands every message to a handler. A handler returns the new state; the runtime validates it
(``schema``), commits it in LMDB together with the message's sequence number, and only then tells the
daemon the message is done. If the handler raises or the state is invalid, that one message fails with
a structured error, the old state stays and the agent carries on.

Hooks, as in OTP's gen_server plus the state-persistence plan this project grew from:
``init``, ``mount``, ``handle_cast``, ``handle_call``, ``handle_info`` (ticks and down notices),
``on_after_validate_state``, ``shutdown``. From a handler, ``self.send``, ``self.call``,
``self.monitor`` and ``self.set_timer`` reach other agents and the daemon; ``self.breaker``, ``self.guarded``,
``self.retry``, ``self.acquire``, ``self.register`` and ``self.discover`` use the host-wide resilience services
(agents/resilience.py); ``self.http(dependency)`` is a pooled HTTP client behind them (agents/http.py).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ipc.errors import ErrorCode, FoundationError
from ipc.flags import FlagTable

if TYPE_CHECKING:
    from agents.http import HttpDependency
    from agents.resilience import Guard, ResilienceClient
    from ipc.workflow_def import RetryPolicy

T = TypeVar("T")


class Runtime(Protocol):
    """What an agent may ask of whatever runs it: the real runtime, or the in-process test harness."""

    name: str
    flags: FlagTable

    def send(self, to: str, body: Any) -> str: ...
    def call(self, to: str, body: Any, timeout: float) -> Any: ...
    def monitor(self, target: str) -> int: ...
    def demonitor(self, ref: int) -> None: ...
    def set_timer(self, after: float, every: float | None) -> int: ...
    def cancel_timer(self, ref: int) -> None: ...
    def persist(self, state: Any) -> None: ...
    def busy(self, seconds: float) -> None: ...
    def stop(self) -> None: ...


class InvalidState(FoundationError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_STATE, message)


class Agent:
    """Base class of Python agents. Override what you need; every hook has a sensible default."""

    # Validates every new state: a dataclass (the state must be a dict of its fields) or a callable that
    # raises or returns False for an invalid state. None: anything JSON-serialisable is accepted.
    schema: type | Callable[[Any], Any] | None = None

    _runtime: Runtime | None = None

    # ---- hooks ----

    def init(self) -> Any:
        """The first state, used when nothing has been persisted yet."""
        return {}

    def mount(self, state: Any) -> None:
        """Called once the state is loaded, before the first message."""

    def handle_cast(self, msg: Any, state: Any) -> Any:
        """A one-way message; return the new state."""
        return state

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        """A request; return (reply, new state)."""
        raise FoundationError(ErrorCode.BAD_REQUEST, f"{type(self).__name__} does not answer calls")

    def handle_info(self, info: Any, state: Any) -> Any:
        """``{"tick": ref}`` from a timer, ``{"down": {"ref", "target", "reason"}}`` from a monitor."""
        return state

    def on_after_validate_state(self, state: Any) -> None:
        """Called after every accepted (validated and committed) state change."""

    def shutdown(self, state: Any) -> None:
        """Called on an orderly stop (SIGTERM), after the last message."""

    def end_batch(self, state: Any) -> Any:
        """Called once the messages that arrived together are handled, before their one commit; returns the state
        to commit. What it sends leaves before the commit, as a handler's sends (a workflow host runs the inline
        steps of all its workflows here, one intent commit a round for all of them). A call's reply is encoded when
        its ``done`` leaves, after the commit: a reply object returned by a handler may be completed here."""
        return state

    def take_side_states(self) -> dict[str, Any] | None:
        """States of other names in the same shared environment, to commit in the same transaction as this agent's
        next commit (a workflow host's records: ipc/state_store.py). The runtime takes them just before committing."""
        return None

    # ---- reaching out ----

    @property
    def name(self) -> str:
        return self._rt().name

    def send(self, to: str, body: Any) -> str:
        """Cast to another agent; returns the message id once the daemon has durably accepted it."""
        return self._rt().send(to, body)

    def call(self, to: str, body: Any, timeout: float = 5.0) -> Any:
        return self._rt().call(to, body, timeout)

    def monitor(self, target: str) -> int:
        """Ask for ``{"down": ...}`` in handle_info when ``target`` dies; returns the monitor's ref."""
        return self._rt().monitor(target)

    def demonitor(self, ref: int) -> None:
        self._rt().demonitor(ref)

    def set_timer(self, after: float, every: float | None = None) -> int:
        """The daemon sends ``{"tick": ref}`` after ``after`` seconds (then every ``every``)."""
        return self._rt().set_timer(after, every)

    def cancel_timer(self, ref: int) -> None:
        self._rt().cancel_timer(ref)

    def enabled(self, flag: str, ident: object = "") -> bool:
        """Whether feature flag ``flag`` is on for ``ident`` (a user, a tenant, a key), answered locally from the
        daemon's table, which the daemon pushes on every change (DESIGN 3.8; an unknown flag is off)."""
        return self._rt().flags.enabled(flag, str(ident))

    def flag_table(self) -> FlagTable:
        """This agent's copy of the daemon's flag table (read it, never change it): for adapters such as the
        OpenFeature provider (agents/openfeature.py)."""
        return self._rt().flags

    def persist(self, state: Any) -> None:
        """Commit ``state`` now, in the middle of a handler (the message itself still counts as unhandled until
        the handler returns): an intent written before an effect that must not be repeated blindly after a crash."""
        self._rt().persist(state)

    def busy(self, seconds: float) -> None:
        """Say that this handler will be silent for up to ``seconds`` (no heartbeats while it runs something long),
        so that the daemon's liveness check does not kill it meanwhile; ``busy(0)`` when done."""
        self._rt().busy(seconds)

    def stop(self) -> None:
        """Exit normally (status 0) once the current batch is committed and answered: a transient agent that
        has finished its work."""
        self._rt().stop()

    # ---- the host-wide resilience services (agents/resilience.py) ----

    def breaker(self, name: str) -> Guard:
        """``with self.breaker("payments"): ...``: the block is a call guarded by the host-wide breaker ``name``;
        raises BreakerOpen (code ``breaker_open``) without running it while the breaker is open."""
        return self._resilience().breaker(name)

    def guarded(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` guarded by breaker ``name``."""
        return self._resilience().guarded(name, fn, *args, **kwargs)

    def retry(self, name: str, fn: Callable[..., T], *args: Any, policy: RetryPolicy | None = None,
              **kwargs: Any) -> T:
        """``fn`` through breaker ``name``, retried as ``policy`` (Temporal's fields) and the retry budget allow."""
        return self._resilience().retry(name, fn, *args, policy=policy, **kwargs)

    def acquire(self, name: str, tokens: float = 1, wait: float = 10.0) -> None:
        """Take tokens from the host-wide rate limit ``name`` (``[resilience.limits.NAME]``), waiting up to
        ``wait`` seconds; raises ``rate_limited`` otherwise."""
        self._resilience().acquire(name, tokens, wait)

    def register(self, capability: str, breaker: str | None = None, **meta: Any) -> None:
        """Offer ``capability`` in service discovery (``foundationctl services``) while this process runs."""
        self._resilience().register(capability, breaker, **meta)

    def discover(self, capability: str) -> list[dict[str, Any]]:
        """The healthy agents offering ``capability``: ``[{"name", "pid", "meta"}]``."""
        return self._resilience().discover(capability)

    def report_error(self, exc: BaseException, dependency: str = "") -> None:
        """Count ``exc`` in the daemon's error tracker (``foundationctl errors``)."""
        self._resilience().report_error(exc, dependency)

    def http(self, name: str, base_url: str | None = None, **options: Any) -> HttpDependency:
        """The pooled HTTP client of dependency ``name`` (agents/http.py), behind its breaker (``name`` unless
        ``breaker=``) and, with ``limit=``, a token of that rate limit per request: ``self.http("payments",
        "http://pay:8081", limit="payments", health="/health")`` once (e.g. in ``mount``), then
        ``self.http("payments").get("/charge")``. Given ``base_url`` again, the client is made anew."""
        clients = self._resilience()._http
        client = clients.get(name)
        if base_url is None:
            if client is None:
                raise FoundationError(ErrorCode.BAD_REQUEST, f"no HTTP client for {name!r} yet: the first "
                                      f"self.http({name!r}, base_url, ...) makes it")
            return client  # type: ignore[no-any-return]
        from agents.http import HttpDependency  # noqa: PLC0415 (httpx only for agents that use it)

        if client is not None:
            client.close()
        client = clients[name] = HttpDependency(self._resilience(), name, base_url, **options)
        return client

    def _resilience(self) -> ResilienceClient:
        runtime = self._rt()
        client = getattr(runtime, "resilience", None)
        if client is None:
            from agents.resilience import LocalChannel, ResilienceClient  # noqa: PLC0415 (a harness without one)

            client = ResilienceClient(LocalChannel(runtime.name))
            runtime.resilience = client  # type: ignore[attr-defined]
        return client

    def _rt(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("this agent is not running under a runtime or harness")
        return self._runtime


def validate_state(agent: Agent, state: Any) -> None:
    """Raise InvalidState if ``agent.schema`` rejects ``state``."""
    schema = agent.schema
    if schema is None:
        return
    try:
        if dataclasses.is_dataclass(schema) and isinstance(schema, type):
            if not isinstance(state, dict):
                raise TypeError(f"expected an object, got {type(state).__name__}")
            schema(**state)
            return
        ok = schema(state)
    except Exception as exc:
        raise InvalidState(f"state rejected by schema: {exc}") from exc
    if ok is False:
        raise InvalidState("state rejected by schema")


class AgentLoadError(Exception):
    """``module:Class`` cannot be turned into an Agent class; the message says why in one line."""


def load_agent_class(ref: str) -> type[Agent]:
    """``"package.module:Class"`` -> the class, checked to be an Agent.

    AgentLoadError when the module (or a package on its path) does not exist, the module has no such attribute,
    or the attribute is not an Agent subclass. An error raised while the module itself runs (a bad import inside
    it, a syntax error) propagates as it is: its traceback is the user's to read.
    """
    module_name, _, class_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AgentLoadError(f"no module named {exc.name!r} (from {ref}; is working_dir or PYTHONPATH "
                                 "right?)") from None
        raise
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AgentLoadError(f"module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        what = f"class {cls.__name__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise AgentLoadError(f"{ref} is {what}, not an Agent subclass")
    return cls
