"""Stable error codes and the one error shape shared by the daemon, the CLI and agents (DESIGN 3.7).

Codes are part of the public interface (DESIGN 3.1): scripts match on them, so they are only ever added,
never renamed. Every error crosses the wire as one object::

    {"code": "agent_down", "category": "unavailable", "message": "...", "context": {...}, "retryable": true}

``code`` and ``message`` are what older peers read and write; a peer that sends only those two is understood
(the category and ``retryable`` then follow from the code, ``CODE_CATEGORIES``). An error may add ``cause`` (the
same shape, one level down) and ``traceback`` (the remote side's, as text): ``from_wire`` turns them into the
``__cause__`` chain of the exception it makes.

    Exception ─── FoundationError (code, category, message, context, retryable)
                     ├── wire.WireError, sdk.InvalidState, resilience.BreakerOpen, ...
                     └── made at each boundary from what a library raised: ``from_exception`` maps OSError
                         (and ConnectionError, TimeoutError), ZeroMQ's ZMQError/Again and LMDB's Error by type

Categories: ``business`` (the request was understood and refused: not retried, not a breaker failure),
``validation`` (the request is wrong), ``infrastructure`` (a dependency or the host failed), ``timeout``,
``unavailable`` (down, full or shedding load for now) and ``internal`` (a bug). The first two are never retried
and never count against a circuit breaker; the next three are retried. ``classify`` gives the shape of any
exception; agents/workflow/errors.py and the resilience SDK use it.

Context: ``error_context(key=value)`` (a ``contextvars`` scope, so threads and tasks each have their own) adds its
keys to the context of every FoundationError made inside it; the agent runtime opens one per message
(``agent``, ``message``), so an error raised deep in a handler still says where it came from.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"  # not JSON, not an object, a missing or mistyped field
    TOO_LARGE = "too_large"  # a request or message over the size limit
    UNKNOWN_VERB = "unknown_verb"
    PERMISSION_DENIED = "permission_denied"  # peer credentials do not allow this verb
    NO_SUCH_CHILD = "no_such_child"
    ALREADY_EXISTS = "already_exists"
    INVALID_SPEC = "invalid_spec"  # an attach request whose child spec does not validate
    NOT_A_SUPERVISOR = "not_a_supervisor"
    SPAWN_FAILED = "spawn_failed"
    SHUTTING_DOWN = "shutting_down"
    NO_SUCH_AGENT = "no_such_agent"  # a message to a name that is not an agent in the tree
    MAILBOX_FULL = "mailbox_full"  # the recipient's mailbox is at its bound: back off and retry
    TIMEOUT = "timeout"  # a call got no reply in time
    AGENT_DOWN = "agent_down"  # the callee died before it answered
    UPGRADING = "upgrading"  # foundationd was upgraded in place with the call pending (docs/upgrade.md): call again
    UNAUTHORIZED = "unauthorized"  # a hello with a wrong or reused token
    HANDLER_ERROR = "handler_error"  # the recipient's handler raised; the message failed, its state is unchanged
    INVALID_STATE = "invalid_state"  # a handler returned a state its schema rejects; the old state stays
    INVALID_CONFIG = "invalid_config"  # a reload whose config does not validate; the running tree is unchanged
    BUSY = "busy"  # another reload is still being applied
    NO_SUCH_FLAG = "no_such_flag"  # a flag operation on a name that is not a flag
    NOT_READY = "not_ready"  # migrate next before the stage held its hold time with its gates green
    INTERNAL = "internal"  # a bug in the daemon; the request failed, the daemon keeps running
    # resilience (issue 14)
    BREAKER_OPEN = "breaker_open"  # the dependency's circuit breaker is open (or isolated): the call was not made
    RATE_LIMITED = "rate_limited"  # no token in time; context.retry_after says when one will be
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"  # retries to this dependency are over their share of calls
    NO_SUCH_LIMIT = "no_such_limit"  # a rate limit that the config does not define
    # what a library raised, mapped at the boundary (from_exception)
    OS_ERROR = "os_error"  # an OSError of the host: a file, a socket, a process
    TRANSPORT = "transport"  # ZeroMQ failed under a connection
    STORAGE = "storage"  # LMDB failed (full map, too many readers, a corrupt or unreadable file)
    # the SDK's HTTP client per dependency (agents/http.py)
    HTTP_ERROR = "http_error"  # a dependency answered 5xx or 429 (context.status); 429 and 503 are unavailable
    UNREACHABLE = "unreachable"  # no connection to a dependency (refused, reset, name not resolved)


class Category(StrEnum):
    BUSINESS = "business"
    VALIDATION = "validation"
    INFRASTRUCTURE = "infrastructure"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


CATEGORIES = tuple(str(c) for c in Category)
RETRIED = frozenset({"infrastructure", "timeout", "unavailable"})  # retried; business and validation never
NOT_COUNTED = frozenset({"business", "validation"})  # not a failure of the dependency (circuit breakers)

# Each code's category: what a retry policy and a circuit breaker make of it. A code not listed is internal.
CODE_CATEGORIES: dict[str, str] = {
    "bad_request": "validation", "too_large": "validation", "unknown_verb": "validation",
    "permission_denied": "validation", "no_such_child": "validation", "already_exists": "business",
    "invalid_spec": "validation", "not_a_supervisor": "validation", "spawn_failed": "infrastructure",
    "shutting_down": "unavailable", "no_such_agent": "unavailable", "mailbox_full": "unavailable",
    "timeout": "timeout", "agent_down": "unavailable", "unauthorized": "validation", "handler_error": "business",
    "invalid_state": "business", "invalid_config": "validation", "busy": "unavailable", "internal": "internal",
    "upgrading": "unavailable",
    "breaker_open": "unavailable", "rate_limited": "unavailable", "retry_budget_exhausted": "unavailable",
    "no_such_limit": "validation", "os_error": "infrastructure", "transport": "infrastructure",
    "storage": "infrastructure", "http_error": "infrastructure", "unreachable": "unavailable",
}
# Codes whose category is retried but which no retry may follow: the retries themselves are what is refused.
NOT_RETRYABLE = frozenset({"retry_budget_exhausted"})


def category_of(code: str) -> str:
    return CODE_CATEGORIES.get(str(code), "internal")


def retryable_by_default(code: str, category: str) -> bool:
    return category in RETRIED and str(code) not in NOT_RETRYABLE


_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("foundation_error_context",
                                                                                   default=None)


@contextlib.contextmanager
def error_context(**fields: Any) -> Iterator[None]:
    """Every FoundationError made inside this block carries ``fields`` in its context (inner scopes add to outer)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class FoundationError(Exception):
    """An error with a stable code; what a request handler raises and the boundary turns into a reply.

    ``category`` and ``retryable`` default to what the code says (``CODE_CATEGORIES``); ``context`` gets the keys of
    the enclosing ``error_context`` scopes under its own."""

    def __init__(self, code: ErrorCode, message: str, *, category: str | None = None,
                 context: Mapping[str, Any] | None = None, retryable: bool | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.category = category if category in CATEGORIES else category_of(code)
        self.context: dict[str, Any] = {**(_context.get() or {}), **(context or {})}
        self.retryable = retryable if retryable is not None else retryable_by_default(code, self.category)
        self.traceback: str | None = None  # the remote side's, when this error came over the wire with one

    def to_wire(self, depth: int = 3) -> dict[str, Any]:
        body: dict[str, Any] = {"code": str(self.code), "message": self.message, "category": self.category,
                                "context": self.context, "retryable": self.retryable}
        if self.traceback:
            body["traceback"] = self.traceback
        cause = self.__cause__
        if cause is not None and depth > 0:
            body["cause"] = (cause if isinstance(cause, FoundationError) else from_exception(cause)).to_wire(depth - 1)
        return body

    @classmethod
    def from_wire(cls, error: object, unknown: ErrorCode = ErrorCode.INTERNAL) -> FoundationError:
        """The other side's error object; a code this side does not know becomes ``unknown`` (the code as sent is
        kept in ``context["remote_code"]``, and its category and retryable flag as the other side said)."""
        fields = error if isinstance(error, dict) else {}
        raw = str(fields.get("code"))
        sent = fields.get("context")
        context: dict[str, Any] = sent if isinstance(sent, dict) else {}
        try:
            code = ErrorCode(raw)
        except ValueError:
            code = unknown
            context = {**context, "remote_code": raw}
        category = fields.get("category")
        retryable = fields.get("retryable")
        err = cls(code, str(fields.get("message", "")), category=category if isinstance(category, str) else None,
                  context=context, retryable=retryable if isinstance(retryable, bool) else None)
        if isinstance(fields.get("traceback"), str):
            err.traceback = fields["traceback"]
        if isinstance(fields.get("cause"), dict):
            err.__cause__ = FoundationError.from_wire(fields["cause"])
        return err

    @property
    def wire_code(self) -> str:
        """The code as the side that made the error named it (a code this side does not know included)."""
        return str(self.context.get("remote_code", self.code))


# ---- mapping what libraries raise, at the boundary ----

ZMQ_ETERM = 156384765  # zmq.ETERM: the context was terminated (this side is going away)
_UNAVAILABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.EHOSTUNREACH,
                                 errno.ENETUNREACH, errno.ECONNABORTED, errno.ENOTCONN})


def from_exception(exc: BaseException, what: str = "") -> FoundationError:
    """``exc`` as a FoundationError (itself when it is one), ``what`` saying what was being done. ZeroMQ and LMDB are
    recognised by their exception types' modules, so that this module imports neither."""
    if isinstance(exc, FoundationError):
        return exc
    prefix = f"{what}: " if what else ""
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    text = str(exc) or name
    if module == "zmq":
        if name == "Again":
            err = FoundationError(ErrorCode.TIMEOUT, f"{prefix}{text}", context={"exception": name})
        else:
            err = _zmq(exc, prefix + text)
    elif module == "lmdb":
        err = FoundationError(ErrorCode.STORAGE, f"{prefix}{name}: {text}", context={"exception": name},
                              retryable=name in ("ReadersFullError", "MapResizedError"))
    elif isinstance(exc, TimeoutError):
        err = FoundationError(ErrorCode.TIMEOUT, f"{prefix}{text}", context={"exception": name})
    elif isinstance(exc, OSError):
        number = exc.errno
        context: dict[str, Any] = {"exception": name, "errno": errno.errorcode.get(number or 0, number)}
        if exc.filename is not None:
            context["path"] = str(exc.filename)
        category = "timeout" if number == errno.ETIMEDOUT else "infrastructure"
        err = FoundationError(ErrorCode.OS_ERROR, f"{prefix}{exc.strerror or text}", category=category,
                              context=context)
    else:
        err = FoundationError(ErrorCode.INTERNAL, f"{prefix}{name}: {text}", context={"exception": name})
    err.__cause__ = exc
    return err


def _zmq(exc: BaseException, message: str) -> FoundationError:
    number = getattr(exc, "errno", None)
    # ETERM (the context is gone) and ENOTSOCK (the socket was closed): this side is going away, not the peer.
    category = "unavailable" if number in (ZMQ_ETERM, errno.ENOTSOCK, *_UNAVAILABLE_ERRNOS) else "infrastructure"
    return FoundationError(ErrorCode.TRANSPORT, message, category=category,
                           context={"exception": type(exc).__name__, "errno": number})


def classify(exc: BaseException, unknown: str = "business") -> dict[str, Any]:
    """The error shape of any exception: a FoundationError as it says; an exception with ``code`` and ``category``
    attributes (agents.workflow.errors.StepError, user errors of the same form) as they say; OSError, TimeoutError,
    ZeroMQ and LMDB errors as ``from_exception`` maps them; anything else in the category ``unknown`` (workflows:
    business, since a bug is not cured by running it again; circuit breakers: internal, which counts)."""
    if isinstance(exc, FoundationError):
        return exc.to_wire(depth=0)
    category = getattr(exc, "category", None)
    if isinstance(category, str) and category in CATEGORIES:
        code = getattr(exc, "code", None) or type(exc).__name__
        context = getattr(exc, "context", None)
        return shape(str(code), category, str(exc), context if isinstance(context, dict) else None)
    if isinstance(exc, OSError | TimeoutError) or type(exc).__module__.split(".")[0] in ("zmq", "lmdb"):
        body = from_exception(exc).to_wire(depth=0)
        if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
            body["code"] = type(exc).__name__  # (what a retry policy's non_retryable_errors names)
        return body
    return shape(type(exc).__name__, unknown, str(exc))


def shape(code: str, category: str, message: str, context: Mapping[str, Any] | None = None,
          retryable: bool | None = None) -> dict[str, Any]:
    """The error shape as a plain dict."""
    return {"code": code, "category": category, "message": message, "context": dict(context or {}),
            "retryable": retryable if retryable is not None else retryable_by_default(code, category)}
