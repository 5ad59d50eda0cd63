"""Agents used by the messaging and persistence tests, run by real daemons as ``tests.agents_for_tests:Name``.

``tests`` has no ``__init__.py``: it is importable in an agent process as a namespace package because the
test configs give those agents ``working_dir`` = the repository root (``python -m`` puts the working
directory first on ``sys.path``). Each agent answers the call ``{"get": true}`` with its whole state.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from agents.sdk import Agent


def _get(msg: Any) -> bool:
    return isinstance(msg, dict) and bool(msg.get("get"))


class Recorder(Agent):
    """Appends every cast's body to ``state["got"]``: shows order and exactly-once at a glance. The calls
    ``{"big": N}`` and ``{"unencodable": true}`` answer with a reply that cannot travel (and change the state)."""

    def init(self) -> dict[str, Any]:
        return {"got": []}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        return {"got": [*state["got"], msg]}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if isinstance(msg, dict) and msg.get("len"):
            return len(state["got"]), state
        if isinstance(msg, dict) and msg.get("big"):
            return "x" * msg["big"], {"got": [*state["got"], "big"]}
        if isinstance(msg, dict) and msg.get("unencodable"):
            return {1, 2}, {"got": [*state["got"], "unencodable"]}
        return state, state


class Sleepy(Agent):
    """``{"sleep": S}`` (cast or call) sleeps S seconds in the handler; ``{"block": true}`` never returns;
    ``{"crash": true}`` SIGKILLs its own process in the middle of the handler."""

    def init(self) -> dict[str, int]:
        return {"handled": 0}

    def _work(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if msg.get("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        if msg.get("block"):
            while True:
                time.sleep(3600)
        if "sleep" in msg:
            time.sleep(float(msg["sleep"]))

    def handle_cast(self, msg: Any, state: dict[str, int]) -> dict[str, int]:
        self._work(msg)
        return {"handled": state["handled"] + 1}

    def handle_call(self, msg: Any, state: dict[str, int]) -> tuple[Any, dict[str, int]]:
        if _get(msg):
            return state, state
        self._work(msg)
        return "done", {"handled": state["handled"] + 1}


def _non_negative(state: Any) -> bool:
    return isinstance(state, dict) and set(state) == {"value"} and isinstance(state["value"], int) \
        and state["value"] >= 0


class Picky(Agent):
    """State ``{"value": V}`` with V >= 0 (its schema). ``{"set": V}`` sets V; ``{"raise": text}`` raises."""

    schema = staticmethod(_non_negative)

    def init(self) -> dict[str, int]:
        return {"value": 0}

    def _apply(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(msg, dict) and "raise" in msg:
            raise ValueError(msg["raise"])
        if isinstance(msg, dict) and "set" in msg:
            return {"value": msg["set"]}
        return state

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        return self._apply(msg, state)

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if _get(msg):
            return state, state
        return "ok", self._apply(msg, state)


class Watcher(Agent):
    """``{"monitor": NAME}`` monitors NAME (replies with the ref); down notices are kept in ``state["downs"]``."""

    def init(self) -> dict[str, Any]:
        return {"downs": []}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if isinstance(msg, dict) and "monitor" in msg:
            return self.monitor(msg["monitor"]), state
        if isinstance(msg, dict) and "demonitor" in msg:
            self.demonitor(msg["demonitor"])
            return "ok", state
        return state, state

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(info, dict) and "down" in info:
            return {"downs": [*state["downs"], info["down"]]}
        return state


class Ticker(Agent):
    """Asks for a tick every ``TICK_EVERY`` seconds (env, default 0.05) when it starts (in ``mount``) and counts
    the ticks it gets in ``state["ticks"]``, spending ``TICK_WORK`` seconds (default 0) on each.
    ``{"cancel": true}`` cancels the timer."""

    def init(self) -> dict[str, int]:
        return {"ticks": 0}

    def mount(self, state: dict[str, int]) -> None:
        every = float(os.environ.get("TICK_EVERY", "0.05"))
        self.work = float(os.environ.get("TICK_WORK", "0"))
        self.timer = self.set_timer(every, every)

    def handle_info(self, info: Any, state: dict[str, int]) -> dict[str, int]:
        if isinstance(info, dict) and info.get("tick") == self.timer:
            time.sleep(self.work)
            return {"ticks": state["ticks"] + 1}
        return state

    def handle_call(self, msg: Any, state: dict[str, int]) -> tuple[Any, dict[str, int]]:
        if isinstance(msg, dict) and msg.get("cancel"):
            self.cancel_timer(self.timer)
            return "ok", state
        return state, state


class Relay(Agent):
    """Forwards every cast ``{"to": NAME, "body": B}`` to NAME with ``self.send`` (an agent-originated send)."""

    def init(self) -> dict[str, int]:
        return {"relayed": 0}

    def handle_cast(self, msg: Any, state: dict[str, int]) -> dict[str, int]:
        self.send(msg["to"], msg["body"])
        return {"relayed": state["relayed"] + 1}

    def handle_call(self, msg: Any, state: dict[str, int]) -> tuple[Any, dict[str, int]]:
        return state, state


class Careless(Agent):
    """No schema. ``{"none": true}`` forgets to return a state; ``{"set": true}`` returns a set (not JSON)."""

    def init(self) -> dict[str, Any]:
        return {"v": 0}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg.get("none"):
            return None
        if msg.get("set"):
            return {"v": {1, 2}}
        return {"v": msg.get("v", state["v"])}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return state, state


class Facts(Agent):
    """A call answers with what the process looks like from inside: the zygote tests compare a forked agent with
    an exec'd one, fact by fact."""

    def init(self) -> dict[str, Any]:
        return {}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import sys  # noqa: PLC0415 - only this agent needs it

        umask = os.umask(0)
        os.umask(umask)
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        facts = {
            "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "uid": os.getuid(),
            "cwd": os.getcwd(), "umask": umask, "env": dict(os.environ), "argv": sys.argv[1:],
            "path0": sys.path[0], "main": sys.modules["__main__"].__name__,
            "fd_kinds": sorted(_fd_kind(fd) for fd in fds if fd > 2),
            "std": [_fd_kind(fd) for fd in (0, 1, 2)],
            "signals": {s.name: _handler(signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)},
        }
        return facts, state


def _handler(handler: Any) -> str:
    return getattr(handler, "__qualname__", str(handler))


def _fd_kind(fd: int) -> str:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "gone"  # the listdir's own fd
    return target.split(":")[0] if ":" in target else ("file" if target.startswith("/") else target)


class Guarded(Agent):
    """Calls a pretend dependency through the host-wide breaker ``msg["breaker"]`` (default ``dep``):
    ``{"call": "ok"|"fail"|"business"|"slow"}`` -> ``"ok"``, or the error's code (``breaker_open`` when refused)
    and category. ``{"acquire": LIMIT, "n": N}`` takes N tokens one at a time and answers their grant times
    (CLOCK_MONOTONIC, one clock for the whole host). ``{"retry": DEP, "fail": K}`` fails K times with an
    infrastructure error, then succeeds, through ``self.retry``; answers the attempts. ``{"register": CAP}``."""

    def init(self) -> dict[str, Any]:
        return {}

    def mount(self, state: dict[str, Any]) -> None:
        capability = os.environ.get("CAPABILITY")
        if capability:
            self.register(capability, version=1)

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from agents.workflow.errors import BusinessError, InfrastructureError  # noqa: PLC0415
        from ipc.errors import FoundationError  # noqa: PLC0415
        from ipc.workflow_def import RetryPolicy  # noqa: PLC0415

        if "call" in msg:
            def dependency() -> str:
                if msg["call"] == "fail":
                    raise InfrastructureError("the dependency is down", code="down")
                if msg["call"] == "business":
                    raise BusinessError("card declined", code="declined")
                if msg["call"] == "slow":
                    time.sleep(float(msg.get("took", 0.2)))
                return "ok"
            try:
                return self.guarded(msg.get("breaker", "dep"), dependency), state
            except FoundationError as exc:
                return {"code": str(exc.code), "category": exc.category}, state
            except Exception as exc:
                return {"code": getattr(exc, "code", type(exc).__name__),
                        "category": getattr(exc, "category", "")}, state
        if "acquire" in msg:
            times = []
            for _ in range(int(msg.get("n", 1))):
                self.acquire(msg["acquire"], wait=float(msg.get("wait", 30)))
                times.append(time.clock_gettime(time.CLOCK_MONOTONIC))
            return times, state
        if "retry" in msg:
            attempts = []

            def flaky() -> int:
                attempts.append(1)
                if len(attempts) <= int(msg["fail"]):
                    raise InfrastructureError("try again", code="flaky")
                return len(attempts)
            policy = RetryPolicy(initial_interval=0.01, maximum_attempts=int(msg.get("max", 5)))
            try:
                return {"attempts": self.retry(msg["retry"], flaky, policy=policy)}, state
            except Exception as exc:
                return {"attempts": len(attempts), "code": str(getattr(exc, "code", type(exc).__name__))}, state
        if "business_retry" in msg:
            attempts = []

            def refuse() -> None:
                attempts.append(1)
                raise BusinessError("no such order", code="no_order")
            try:
                self.retry(msg["business_retry"], refuse)
            except BusinessError:
                return {"attempts": len(attempts)}, state
        if "register" in msg:
            self.register(msg["register"])
            return "registered", state
        if "discover" in msg:
            return self.discover(msg["discover"]), state
        return state, state


class HttpUser(Agent):
    """Calls a local HTTP server (``DEP_URL``) through ``self.http``: dependency ``web`` (breaker ``web``, health
    ``/health`` checked before every request when ``HEALTH`` is set), ``slow`` (0.3 s timeout) and ``limited``
    (limit ``api``). ``{"dep": D, "get": PATH, "n": N}`` answers, for each request, its status or its error's code."""

    def mount(self, state: dict[str, Any]) -> None:
        url = os.environ["DEP_URL"]
        self.http("web", url, health="/health" if os.environ.get("HEALTH") else None, health_every=0.0)
        self.http("slow", url, timeout=0.3)
        self.http("limited", url, limit="api")

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from ipc.errors import FoundationError  # noqa: PLC0415

        out: list[Any] = []
        for _ in range(int(msg.get("n", 1))):
            try:
                out.append(self.http(msg["dep"]).get(msg["get"]).status_code)
            except FoundationError as exc:
                out.append(str(exc.code))
        return out, state


class Loud(Agent):
    """Says one line on stdout and one on stderr as it starts: the daemon keeps the two streams apart."""

    def init(self) -> dict[str, Any]:
        import sys  # noqa: PLC0415 - only this agent needs it

        print("loud on stdout", flush=True)
        print("loud on stderr", file=sys.stderr, flush=True)
        return {}


class Deferrer(Agent):
    """Answers calls later, as the cluster bridge does (AgentRuntime.defer_reply / reply / post): ``{"double": X}`` is
    answered 2X from a handle_info that a thread of its own posted; ``{"never": true}`` is never answered (the caller
    times out); ``{"die": true}`` defers, then the process exits (the caller gets agent_down at once)."""

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import threading  # noqa: PLC0415

        runtime: Any = self._rt()
        handle = runtime.defer_reply()
        if "double" in msg:
            threading.Thread(target=runtime.post, args=({"answer": handle, "value": 2 * msg["double"]},)).start()
        elif "die" in msg:
            threading.Thread(target=lambda: (time.sleep(0.2), os._exit(3))).start()
        return None, state

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(info, dict) and "answer" in info:
            self._rt().reply(info["answer"], info["value"])  # type: ignore[attr-defined]
        return state
