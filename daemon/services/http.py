"""A very small HTTP/1.1 server on the daemon's own loop, for ``/metrics`` and the dashboard.

    listen socket ──accept──> Connection (non-blocking) ──request head──> route(path) -> (status, type, body)
                                   │ no complete head within TIMEOUT, or over HEAD_MAX: dropped  │    or Stream
                                   └──────────────── response written as the socket takes it <───┘, then closed
    Stream (server-sent events): head now, then Channel.send(...) whenever the service has news, until either
    side closes; a client that reads slower than STREAM_BUFFER is dropped (its EventSource reconnects)

No thread and no timer while nobody connects: the listening socket sits in the loop's epoll set, so an idle daemon
with metrics on still wakes up 0 times a second; an open stream has no timer either (no keep-alive: loopback has no
proxy to time it out). One request per connection (``Connection: close``), GET and HEAD only; a handler runs on the
loop and must be quick (it reads /proc, never waits).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.config import parse_listen
from daemon.shell.loop import EventLoop, TimerHandle

log = logging.getLogger("foundationd")

HEAD_MAX = 8192  # bytes of request line and headers
TIMEOUT = 10.0  # seconds a client has to send its request and read the answer
MAX_CONNECTIONS = 64
STREAM_BUFFER = 1 << 20  # bytes a stream's client may fall behind before it is dropped

Response = tuple[int, str, bytes]  # (status, content type, body)


class Channel:
    """The open end of a Stream: ``send`` bytes as they come; ``on_close`` is called once when it ends."""

    def __init__(self, conn: _Conn, server: HttpServer) -> None:
        self._conn, self._server = conn, server
        self.on_close: Callable[[], None] = lambda: None
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Queue ``data``; False once the client has gone (or fell too far behind and was dropped)."""
        if self.closed:
            return False
        conn = self._conn
        if len(conn.outbuf) + len(data) > STREAM_BUFFER:
            log.info("http %s: a stream's client fell %d bytes behind: dropped", self._server.address,
                     len(conn.outbuf))
            self._server.drop(conn)
            return False
        pending = bool(conn.outbuf)
        conn.outbuf += data
        if not pending:
            self._server.flush(conn)
        return not self.closed

    def close(self) -> None:
        if not self.closed:
            self._server.drop(self._conn)


@dataclass(frozen=True)
class Stream:
    """A response that stays open (``text/event-stream``): ``opened(channel)`` once its head is written."""

    content_type: str
    opened: Callable[[Channel], None]


Route = Callable[[str, dict[str, str]], Response | Stream | None]  # (path, headers lowercased) -> None: 404

REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error"}


@dataclass
class _Conn:
    sock: socket.socket
    timer: TimerHandle
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytes = b""
    channel: Channel | None = None  # a Stream's, once open: the connection stays after its buffer is written


class HttpServer:
    def __init__(self, loop: EventLoop, listen: str, route: Route) -> None:
        host, port = parse_listen(listen)
        self._loop, self._route = loop, route
        self._conns: dict[int, _Conn] = {}
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.listen(16)
        self._sock.setblocking(False)
        bound = self._sock.getsockname()
        self.address = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
        loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self.drop(conn)
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("http %s: accept failed: %s", self.address, exc)
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, self._loop.call_later(TIMEOUT, lambda s=sock: self._expire(s)))
            self._conns[sock.fileno()] = conn
            self._loop.add_reader(sock.fileno(), lambda c=conn: self._on_readable(c))

    def _expire(self, sock: socket.socket) -> None:
        conn = self._conns.get(sock.fileno()) if sock.fileno() >= 0 else None
        if conn is not None and conn.sock is sock:
            self.drop(conn)

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(conn)
            return
        if conn.channel is not None:  # a stream's client says nothing more; its reader only tells us it left
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > HEAD_MAX:
                self._loop.remove_reader(conn.sock.fileno())
                self._respond(conn, (400, "text/plain", b"request head too large\n"), head_only=False)
            return
        self._loop.remove_reader(conn.sock.fileno())
        self._respond(conn, *self._answer(bytes(conn.inbuf[:end])))

    def _answer(self, head: bytes) -> tuple[Response | Stream, bool]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return (400, "text/plain", b"bad request line\n"), False
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return (405, "text/plain", b"only GET and HEAD\n"), False
        try:
            response = self._route(target.split("?", 1)[0], headers)
        except Exception:  # a bug in a page must not take the daemon down
            log.exception("http %s: %s failed", self.address, target[:200])
            response = (500, "text/plain", b"internal error\n")
        return response or (404, "text/plain", b"not found\n"), method == "HEAD"

    def _respond(self, conn: _Conn, response: Response | Stream, head_only: bool) -> None:
        if isinstance(response, Stream):
            self._open_stream(conn, response, head_only)
            return
        status, content_type, body = response
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        conn.outbuf = head if head_only else head + body
        self.flush(conn)

    def _open_stream(self, conn: _Conn, stream: Stream, head_only: bool) -> None:
        conn.outbuf = (f"HTTP/1.1 200 OK\r\nContent-Type: {stream.content_type}\r\nCache-Control: no-store\r\n"
                       "Connection: close\r\n\r\n").encode()
        if head_only:
            self.flush(conn)
            return
        conn.timer.cancel()  # open for as long as the client stays
        conn.channel = Channel(conn, self)
        self._loop.add_reader(conn.sock.fileno(), lambda: self._on_readable(conn))  # to see it leave
        self.flush(conn)
        if not conn.channel.closed:
            stream.opened(conn.channel)

    def flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.drop(conn)
            return
        conn.outbuf = conn.outbuf[sent:]
        if conn.outbuf:
            self._loop.add_writer(conn.sock.fileno(), lambda: self.flush(conn))
            return
        if conn.channel is not None:  # a stream waits for more
            self._loop.remove_writer(conn.sock.fileno())
            return
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        self.drop(conn)

    def drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        conn.timer.cancel()
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        self._conns.pop(fd, None)
        conn.sock.close()
        if conn.channel is not None and not conn.channel.closed:
            conn.channel.closed = True
            conn.channel.on_close()
