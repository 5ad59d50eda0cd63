"""Control protocol: JSON lines over a Unix stream socket (see docs/protocol.md).

Request ``{"id": 1, "verb": "status", "args": {}}`` and reply ``{"id": 1, "ok": true, "result": {...}}`` or
``{"id": 1, "ok": false, "error": {"code": "...", "message": "..."}}``, one JSON object per ``\\n``-terminated line.
This module owns the framing, the size limit and request validation; the server and the client share it.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import orjson

from ipc.errors import ErrorCode, FoundationError

SOCKET_NAME = "control.sock"
MAX_LINE = 1 << 20  # one request or reply line, bytes, newline included
READ_SIZE = 65536  # a client's recv (a larger one measured no faster for a 170 KB status)


@dataclass(frozen=True)
class Request:
    id: Any
    verb: str
    args: dict[str, Any]


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)  # not `+ b"\n"`: a copy of a 170 KB status less


def parse_request(line: bytes) -> Request:
    """Validate one request line (without its newline); raises FoundationError naming what is wrong.

    When the line is a JSON object, the error carries its ``id`` as ``req_id`` so the reply can echo it.
    """
    if len(line) >= MAX_LINE:
        raise FoundationError(ErrorCode.TOO_LARGE, f"request is {len(line)} bytes, the limit is {MAX_LINE}")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FoundationError(ErrorCode.BAD_REQUEST, "request must be a JSON object")
    verb = obj.get("verb")
    args = obj.get("args", {})
    problem = None
    if not isinstance(verb, str) or not verb:
        problem = "request needs a string 'verb'"
    elif not isinstance(args, dict):
        problem = "'args' must be a JSON object"
    if problem is not None:
        err = FoundationError(ErrorCode.BAD_REQUEST, problem)
        err.req_id = obj.get("id")  # type: ignore[attr-defined]
        raise err
    return Request(id=obj.get("id"), verb=cast(str, verb), args=args)


def ok_reply(req_id: Any, result: Any) -> bytes:
    return encode({"id": req_id, "ok": True, "result": result})


def error_reply(req_id: Any, err: FoundationError) -> bytes:
    return encode({"id": req_id, "ok": False, "error": err.to_wire()})


def _result(reply: dict[str, Any]) -> Any:
    """A reply's result, or its error as a FoundationError value (not raised)."""
    if reply.get("ok"):
        return reply.get("result")
    return FoundationError.from_wire(reply.get("error"))


def too_large(size: int) -> FoundationError:
    return FoundationError(ErrorCode.TOO_LARGE, f"request of {size} bytes is over the {MAX_LINE}-byte line limit")


class ControlUnreachable(Exception):
    """The daemon's control socket cannot be reached (not running, wrong runtime dir, no permission)."""


class ControlClient:
    """A blocking client: one connection, requests answered in order. Used by foundationctl and tests."""

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise ControlUnreachable(f"cannot connect to {path}: {exc.strerror or exc}") from exc
        self._buf = b""
        self._next_id = 0

    def close(self) -> None:
        self._sock.close()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_closed(self) -> None:
        """Block until the daemon closes this connection (it does so as it exits): ``shutdown --wait``."""
        self._sock.settimeout(None)
        try:
            while self._sock.recv(READ_SIZE):
                pass
        except OSError:
            pass

    def request(self, verb: str, **args: Any) -> Any:
        """Send one request; return its result or raise FoundationError with the daemon's code."""
        payload = encode({"id": self._bump(), "verb": verb, "args": args})
        if len(payload) > MAX_LINE:
            raise too_large(len(payload))
        result = _result(self.raw(payload))
        if isinstance(result, FoundationError):
            raise result
        return result

    def stream(self, verb: str, **args: Any) -> Iterator[Any]:
        """A request answered many times (``logs --follow``): yield each result until the daemon closes."""
        req_id = self._bump()
        self._send_raw(encode({"id": req_id, "verb": verb, "args": args}))
        while True:
            try:
                line = self._read_line()
            except ConnectionResetError:
                return
            except OSError as exc:
                raise ControlUnreachable(f"control connection failed: {exc.strerror or exc}") from exc
            result = _result(orjson.loads(line))
            if isinstance(result, FoundationError):
                raise result
            yield result

    def pipeline(self, requests: Iterable[tuple[str, dict[str, Any]]], window: int = 512) -> Iterator[Any]:
        """Send many requests with up to ``window`` unanswered; yield each result or FoundationError, in order.

        Replies may come back out of order (a quick error overtakes a send waiting for its group commit),
        so they are matched by id.
        """
        it = iter(requests)
        waiting: dict[int, Any] = {}
        order: deque[int] = deque()
        exhausted = False
        while order or not exhausted:
            batch = []  # what fits in the window goes in one write: one syscall, one wake-up of the daemon
            while not exhausted and len(order) < window:
                try:
                    verb, args = next(it)
                except StopIteration:
                    exhausted = True
                    break
                req_id = self._bump()
                order.append(req_id)
                payload = encode({"id": req_id, "verb": verb, "args": args})
                if len(payload) > MAX_LINE:  # answered here: the daemon would only discard it
                    waiting[req_id] = {"id": req_id, "ok": False, "error": too_large(len(payload)).to_wire()}
                    continue
                batch.append(payload)
            if batch:
                self._send_raw(b"".join(batch))
            while order and order[0] not in waiting:
                reply = orjson.loads(self._read_line_or_fail())
                waiting[reply.get("id")] = reply
                while b"\n" in self._buf:  # replies that came with it (one group commit answers many): no wait
                    reply = orjson.loads(self._read_line_or_fail())
                    waiting[reply.get("id")] = reply
            while order and order[0] in waiting:
                yield _result(waiting.pop(order.popleft()))

    def _send_raw(self, payload: bytes) -> None:
        try:
            self._sock.sendall(payload)
        except OSError as exc:
            raise ControlUnreachable(f"control connection failed: {exc.strerror or exc}") from exc

    def _read_line_or_fail(self) -> bytes:
        try:
            return self._read_line()
        except OSError as exc:
            raise ControlUnreachable(f"control connection failed: {exc.strerror or exc}") from exc

    def raw(self, payload: bytes) -> dict[str, Any]:
        """Send raw bytes (tests use this for malformed requests) and read one reply line."""
        try:
            self._sock.sendall(payload)
            line = self._read_line()
        except OSError as exc:
            raise ControlUnreachable(f"control connection failed: {exc.strerror or exc}") from exc
        reply = orjson.loads(line)
        if not isinstance(reply, dict):
            raise ControlUnreachable("daemon sent a reply that is not an object")
        return reply

    def _bump(self) -> int:
        self._next_id += 1
        return self._next_id

    def _read_line(self) -> bytes:
        """One reply line. A long one (a status at 1,000 children is 170 KB) comes in several chunks: each chunk is
        searched once and all are joined once, instead of searching and growing the buffer at every chunk."""
        end = self._buf.find(b"\n")
        if end < 0:
            chunks = [self._buf]
            while True:
                chunk = self._sock.recv(READ_SIZE)
                if not chunk:
                    self._buf = b"".join(chunks)
                    raise ConnectionResetError(0, "daemon closed the connection")
                chunks.append(chunk)
                if b"\n" in chunk:
                    break
            self._buf = b"".join(chunks)
            end = self._buf.find(b"\n")
        line, self._buf = self._buf[:end], self._buf[end + 1 :]
        return line
