"""Stable error codes shared by the daemon, the CLI and agents.

Codes are part of the public interface (DESIGN 3.1): scripts match on them, so they are only ever added,
never renamed. Every error crosses the wire as ``{"code": CODE, "message": text}``.
"""

from __future__ import annotations

from enum import StrEnum


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
    UNAUTHORIZED = "unauthorized"  # a hello with a wrong or reused token
    HANDLER_ERROR = "handler_error"  # the recipient's handler raised; the message failed, its state is unchanged
    INVALID_STATE = "invalid_state"  # a handler returned a state its schema rejects; the old state stays
    INVALID_CONFIG = "invalid_config"  # a reload whose config does not validate; the running tree is unchanged
    BUSY = "busy"  # another reload is still being applied
    NO_SUCH_FLAG = "no_such_flag"  # a flag operation on a name that is not a flag
    NOT_READY = "not_ready"  # migrate next before the stage held its hold time with its gates green
    INTERNAL = "internal"  # a bug in the daemon; the request failed, the daemon keeps running


class FoundationError(Exception):
    """An error with a stable code; what a request handler raises and the boundary turns into a reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}

    @classmethod
    def from_wire(cls, error: object, unknown: ErrorCode = ErrorCode.INTERNAL) -> FoundationError:
        """The other side's ``{"code", "message"}``; a code this side does not know becomes ``unknown``."""
        fields = error if isinstance(error, dict) else {}
        try:
            code = ErrorCode(str(fields.get("code")))
        except ValueError:
            code = unknown
        return cls(code, str(fields.get("message", "")))
