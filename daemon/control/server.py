"""The control socket: a Unix stream listener speaking ipc.control's JSON lines, on the daemon's loop.

    accept ──> check peer credentials (SO_PEERCRED) ──> read lines ──> dispatch(verb) ──> reply
                                                                        │
                                   the daemon answers now, or later ────┘ (reply callback)

Each connection is non-blocking with its own input buffer and output queue, so a slow or hostile
client can stall only itself. A line over the limit, bad JSON or an unknown verb gets a structured
error and the connection stays usable; nothing a client sends can raise out of this module.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import re
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.control.verbs import QUIET_VERBS, READ_OPS, READ_VERBS
from daemon.shell.loop import EventLoop
from daemon.shell.socket_path import check_startup_socket
from ipc.control import MAX_LINE, SOCKET_NAME, Request, error_reply, ok_reply, parse_request
from ipc.errors import ErrorCode, FoundationError

log = logging.getLogger("foundationd.control")

Reply = Callable[[Any], Any]  # returns False once the client has gone
# A handler answers through ``reply`` (a result) or raises FoundationError; it may keep ``reply``
# and call it later, when the operation it started has finished.
Handler = Callable[[Request, "Peer", Reply], None]


class Peer:
    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid

    def __repr__(self) -> str:
        return f"uid={self.uid} pid={self.pid}"


class Connection:
    def __init__(self, sock: socket.socket, peer: Peer) -> None:
        self.sock = sock
        self.peer = peer
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closed = False
        self.discarding = False  # inside an over-long line: drop bytes until its newline


class ControlServer:
    def __init__(
        self,
        runtime_dir: Path,
        handlers: dict[str, Handler],
        loop: EventLoop,
        control_group: str | None = None,
    ) -> None:
        self.path = runtime_dir / SOCKET_NAME
        self._handlers = handlers
        self._loop = loop
        self._read_gid = _group_id(control_group)
        self._conns: dict[int, Connection] = {}
        self._uid = os.getuid()
        check_startup_socket(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        if self._read_gid is not None:
            # The read-only group must be able to reach the socket; the credential check limits what it may do.
            os.chown(self.path, -1, self._read_gid)
            os.chmod(self.path, 0o660)
            os.chown(self.path.parent, -1, self._read_gid)
            os.chmod(self.path.parent, 0o710)
        self._listener.listen(128)
        self._listener.setblocking(False)
        loop.add_reader(self._listener.fileno(), self._accept)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()

    # ---- connections ----

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("control: accept failed: %s", exc)
                return
            sock.setblocking(False)
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            conn = Connection(sock, Peer(pid, uid, gid))
            self._conns[sock.fileno()] = conn
            self._loop.add_reader(sock.fileno(), lambda c=conn: self._on_readable(c))

    def _on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        self._take(conn, data)

    def _take(self, conn: Connection, data: bytes) -> None:
        while data and not conn.closed:
            head, sep, data = data.partition(b"\n")
            if conn.discarding:
                conn.discarding = not sep
                continue
            conn.inbuf += head
            if len(conn.inbuf) >= MAX_LINE:  # the newline still to come counts toward the limit
                req_id = _leading_id(bytes(conn.inbuf[:160]))  # so a pipelining client can match the error
                conn.inbuf.clear()
                conn.discarding = not sep
                self._send(conn, error_reply(req_id, FoundationError(ErrorCode.TOO_LARGE, _too_large())))
                continue
            if sep:
                line = bytes(conn.inbuf)
                conn.inbuf.clear()
                if line.strip():
                    self._dispatch(conn, line)

    def _dispatch(self, conn: Connection, line: bytes) -> None:
        req_id = None
        try:
            req = parse_request(line)
            req_id = req.id
            handler = self._handlers.get(req.verb)
            if handler is None:
                raise FoundationError(ErrorCode.UNKNOWN_VERB, f"unknown verb {req.verb!r}")
            reading = req.verb in READ_VERBS or req.args.get("op") in READ_OPS.get(req.verb, ())
            self._authorize(conn.peer, req.verb, reading)
            if req.verb in QUIET_VERBS:
                if log.isEnabledFor(logging.DEBUG):  # a send is thousands a second: no repr of its body for nothing
                    log.debug("control: %s %s by %r", req.verb, _brief(req.args), conn.peer)
            elif not reading:
                log.info("control: %s %s by %r", req.verb, _brief(req.args), conn.peer)
            handler(req, conn.peer, lambda result, rid=req_id: self._send(conn, _reply(rid, result)))
        except FoundationError as err:
            self._send(conn, error_reply(getattr(err, "req_id", req_id), err))
        except Exception as exc:  # a bug in a handler must not take the daemon down
            log.exception("control: %s failed", line[:200])
            self._send(conn, error_reply(req_id, FoundationError(ErrorCode.INTERNAL, repr(exc))))

    def _authorize(self, peer: Peer, verb: str, reading: bool) -> None:
        if peer.uid in (0, self._uid):
            return
        if reading and self._read_gid is not None and self._in_group(peer, self._read_gid):
            return
        group = f", and members of gid {self._read_gid} for read verbs" if self._read_gid is not None else ""
        raise FoundationError(ErrorCode.PERMISSION_DENIED, f"uid {peer.uid} may not use {verb!r}: allowed are root, "
                              f"uid {os.getuid()} (the daemon's user){group} (control_group)")

    @staticmethod
    def _in_group(peer: Peer, gid: int) -> bool:
        if peer.gid == gid:
            return True
        try:
            status = Path(f"/proc/{peer.pid}/status").read_text()
        except OSError:
            return False
        for line in status.splitlines():
            if line.startswith("Groups:"):
                return str(gid) in line.split()[1:]
        return False

    def _send(self, conn: Connection, payload: bytes) -> bool:
        """Queue a reply; False once the connection is gone (a follower then stops).

        With nothing queued before it, a reply goes to the socket as it is, and only what the socket does not take
        now is copied into ``outbuf``: a status of 1,000 children is 170 KB.
        """
        if conn.closed:
            return False
        if not conn.outbuf:
            try:
                sent = conn.sock.send(payload)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return False
            if sent == len(payload):
                return True
            payload = memoryview(payload)[sent:]
        conn.outbuf += payload
        self._flush(conn)
        return not conn.closed

    def _flush(self, conn: Connection) -> None:
        # Replies are small and clients read them; a client that stops reading is cut off rather
        # than allowed to grow the daemon's memory or block the loop.
        while conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                if len(conn.outbuf) > 16 * MAX_LINE:
                    self._drop(conn)
                else:
                    self._loop.add_writer(conn.sock.fileno(), lambda: self._flush(conn))
                return
            except OSError:
                self._drop(conn)
                return
            del conn.outbuf[:sent]
        self._loop.remove_writer(conn.sock.fileno())

    def _drop(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._loop.remove_reader(conn.sock.fileno())
        self._loop.remove_writer(conn.sock.fileno())
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()


def _reply(req_id: Any, result: Any) -> bytes:
    """A handler answers later with a result, or with a FoundationError for a structured failure."""
    if isinstance(result, FoundationError):
        return error_reply(req_id, result)
    return ok_reply(req_id, result)


def _group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("control_group %r does not exist; only root and the daemon's user may connect", name)
        return None


_LEADING_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,100}")\s*,')


def _leading_id(head: bytes) -> Any:
    """The ``id`` of a line too long to parse, when it comes first (as foundationctl and ipc.control write it)."""
    match = _LEADING_ID.match(head)
    return orjson.loads(match.group(1)) if match else None


def _too_large() -> str:
    return f"request line exceeds {MAX_LINE} bytes"


def _brief(args: dict[str, Any]) -> str:
    text = repr(args)
    return text if len(text) <= 200 else text[:200] + "..."
