"""The broker's wire protocol: one orjson object per ZeroMQ frame, validated here and nowhere else.

Every frame is a JSON object with a ``kind`` and the fields that kind requires (``SCHEMA``). A frame that
is too large, not JSON, not an object, of an unknown kind, or missing/mistyping a field raises
``WireError`` with a stable code; such a frame never reaches routing. docs/messaging.md describes each
kind for people who write an agent in another language.

    agent (DEALER)                       foundationd (ROUTER)
      hello {name, token}      ──────>     check token of this incarnation
                               <──────     welcome {name, heartbeat}
      cast {ref, to, body}     ──────>     persist (group commit)
                               <──────     accept {ref, id} | reject {ref, error}
                               <──────     deliver {id, seq, sender, body, call, info}
      done {id[, reply|error]} ──────>     delete from outbox; route a call's reply
      done {id, deferred: true}──────>     a call answered later, by:
      answer {id, reply|error} ──────>     the deferred call's reply (before the caller's timeout)
      call {ref, to, body}     ──────>     queue behind earlier casts (not persisted)
                               <──────     reply {ref, body} | reply {ref, error}
      heartbeat {}             ──────>     liveness
      monitor {ref, target}    ──────>     later: down {ref, target, reason}
      timer {ref, after, every}──────>     later: tick {ref} as a delivery of kind info
      svc {ref, op, args}      ──────>     breakers, limits, retry budget, discovery
                               <──────     reply {ref, body} | reply {ref, error}
      svc_cast {op, args}      ──────>     outcomes of guarded calls, errors (batched, no answer)
      routes {ref, node, remote}──────>    the cluster bridge only: this node's name, names on other nodes
                               <──────     reply {ref, body: {"agents": [connected agents]}}
                               <──────     breaker {name, state, open_until, slow_call_duration} (pushed)
    after an in-place upgrade of foundationd (docs/upgrade.md), once per agent, at its first frame to the new image:
                               <──────     resume {received}  (frames of this session the daemon has handled)
      resumed {sent}           ──────>     frames the agent sent since hello; those after ``received`` follow again
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ipc.errors import ErrorCode, FoundationError

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20  # bytes per frame; also set as ZMQ_MAXMSGSIZE on every socket
BROKER_SOCKET = "broker.sock"
# NAME@node, a cast or call the cluster bridge carries: both parts NATS subject tokens (the name may have dots
# between non-empty tokens, the node none), so that a target JetStream would refuse is refused before it is accepted.
REMOTE_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*@[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_ANY = object()
_NUM = (int, float)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))

# kind -> {field: accepted types}; every listed field is required (None must be explicit for optional ones).
SCHEMA: dict[str, dict[str, Any]] = {
    "hello": {"name": _OPT_STR, "token": _OPT_STR},
    "welcome": {"name": _OPT_STR, "heartbeat": _NUM},
    "cast": {"ref": int, "to": str, "body": _ANY},
    "call": {"ref": int, "to": str, "body": _ANY, "timeout": _NUM},
    "accept": {"ref": int, "id": str},
    "reject": {"ref": int, "error": dict},
    "deliver": {"id": str, "seq": _OPT_INT, "sender": _OPT_STR, "body": _ANY, "call": bool, "info": bool},
    "done": {"id": str},
    "answer": {"id": str},
    "reply": {"ref": int},
    "heartbeat": {},
    "monitor": {"ref": int, "target": str},
    "demonitor": {"ref": int},
    "down": {"ref": int, "target": str, "reason": str},
    "timer": {"ref": int, "after": _NUM, "every": _OPT_NUM},
    "cancel_timer": {"ref": int},
    "tick": {"ref": int},
    "error": {"error": dict},
    # the resilience services (agents/resilience.py, daemon/services/resilience.py): a request answered by reply,
    # a one-way report, and a breaker's new state pushed to the agents that use it
    "svc": {"ref": int, "op": str, "args": dict},
    "svc_cast": {"op": str, "args": dict},
    "breaker": {"name": str, "state": str},
    # an in-place upgrade (daemon/broker/resume.py): the new image asks, the agent sends again what was not handled
    "resume": {"received": int},
    "resumed": {"sent": int},
    # the cluster bridge (agents/builtin/bridge.py): where names that live on other nodes are
    "routes": {"ref": int, "node": str, "remote": dict},
}


class WireError(FoundationError):
    """A frame that cannot be accepted; its code tells the peer why."""


def encode(kind: str, **fields: Any) -> bytes:
    data = orjson.dumps({"kind": kind, **fields})
    if len(data) > MAX_MESSAGE:
        raise WireError(ErrorCode.TOO_LARGE, f"{kind} frame is {len(data)} bytes, the limit is {MAX_MESSAGE}")
    return data


def decode(frame: bytes) -> dict[str, Any]:
    """Parse and validate one frame; raises WireError naming what is wrong."""
    if len(frame) > MAX_MESSAGE:
        raise WireError(ErrorCode.TOO_LARGE, f"frame is {len(frame)} bytes, the limit is {MAX_MESSAGE}")
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise WireError(ErrorCode.BAD_REQUEST, f"frame is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise WireError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    kind = msg.get("kind")
    schema = SCHEMA.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise WireError(ErrorCode.BAD_REQUEST, f"unknown kind {kind!r}")
    for name, types in schema.items():
        if name not in msg:
            raise WireError(ErrorCode.BAD_REQUEST, f"{kind} frame needs '{name}'")
        value = msg[name]
        if types is not _ANY and (not isinstance(value, types) or (isinstance(value, bool) and types is not bool)):
            raise WireError(ErrorCode.BAD_REQUEST, f"{kind}.{name} has the wrong type ({type(value).__name__})")
    return msg


def error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    """The one error shape (ipc/errors.py): ``{"code", "message", "category", "context", "retryable"}``."""
    return FoundationError(code, message).to_wire()
