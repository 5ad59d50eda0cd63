"""The broker's socket and who is on the other end: one ZeroMQ ROUTER, its sessions and the agents' hello tokens.

    DEALER ──frame──> ROUTER ──decode──> hello? ──token of this incarnation──> Session ──> on_hello(name)
                         │                 │ no
                         │                 v
                         │               session? ──no──> error unauthorized ("say hello first")
                         │                 │ yes: last_seen = now
                         │                 v
                         │               handlers[kind](session, msg)      (the broker's cast, call, done, ...)
                         └── also bound as broker-UID.sock for agents running as another user (endpoint_for)

* Identity: ``expect(name)`` gives each incarnation of an agent a one-time token; a hello with a wrong or used
  token is refused, so nobody can take over an agent's traffic. ``name=None`` is an anonymous client: it may
  cast and call, it has no mailbox.
* A frame that fails validation is answered with its error and goes no further; a handler that raises on a valid
  frame is answered ``internal`` and the daemon goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from daemon.shell.loop import EventLoop
from daemon.shell.socket_path import check_socket
from ipc import wire
from ipc.errors import ErrorCode

log = logging.getLogger("foundationd.broker")

READ_BURST = 20_000  # frames read in one go before other descriptors get a turn


@dataclass
class Session:
    identity: bytes
    name: str | None  # None: an anonymous client (no mailbox, may cast and call)
    last_seen: float = 0.0
    busy_until: float = 0.0  # an agent that said it will be silent (a long step) is not silent before this
    received: int = 0  # frames handled since hello: where a ``resume`` after an in-place upgrade starts again
    resumable: bool = False  # its hello said it can resume (its DEALER has a routing id of its own)
    resuming: bool = False  # handed over by the previous image, ``resumed`` not heard yet: nothing is sent to it
    asked: bool = False  # ``resume`` sent


@dataclass
class _Agent:
    token: str | None = None  # the one hello this incarnation may still say
    session: Session | None = None


Handler = Callable[[Session, dict[str, Any]], None]


class Peers:
    def __init__(self, runtime_dir: Path, loop: EventLoop, *, heartbeat: float, handlers: Mapping[str, Handler],
                 on_hello: Callable[[str], None]) -> None:
        self._loop = loop
        self.heartbeat = heartbeat
        self._handlers = handlers
        self._on_hello = on_hello
        self.welcome_fields: Callable[[str], dict[str, Any]] = lambda name: {}  # more for an agent's welcome (flags)
        self.on_resumed: Callable[[str], None] = lambda name: None  # a handed-over session caught up (resume.py)
        self._socket_path = runtime_dir / wire.BROKER_SOCKET
        self.endpoint = f"ipc://{self._socket_path}"
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE)
        self._sock.setsockopt(zmq.SNDHWM, 0)  # deliveries are bounded by the window, accepts by requests
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(self.endpoint)
        finally:
            os.umask(old_umask)
        self._user_sockets: dict[int, tuple[str, Path]] = {}  # uid -> endpoint, path (agents with user=)
        self._sessions: dict[bytes, Session] = {}
        self._agents: dict[str, _Agent] = {}
        self._fd = self._sock.getsockopt(zmq.FD)
        loop.add_reader(self._fd, self._on_readable)

    def close(self, linger: int = 0) -> None:
        """``linger`` (ms): how long what is queued may still take to reach the agents (an in-place upgrade's)."""
        self._loop.remove_reader(self._fd)
        self._sock.close(linger=linger)
        self._ctx.term()
        for path in [self._socket_path, *(path for _, path in self._user_sockets.values())]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def endpoint_for(self, uid: int, gid: int) -> str:
        """The endpoint an agent running as ``uid`` connects to: the same ROUTER, bound once more on a socket only
        that user (and root) may connect to, ``broker-UID.sock`` in the root-owned runtime directory.

        Nothing more is exposed than that user already has: whoever runs as the agent's user can read its
        token from its memory and send as it. Hellos still need the token; ``send``-ing anonymously from there
        is what the agent itself may do.
        """
        if uid == os.geteuid():
            return self.endpoint
        known = self._user_sockets.get(uid)
        if known is not None:
            return known[0]
        path = self._socket_path.with_name(f"broker-{uid}.sock")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a SIGKILLed daemon
        endpoint = f"ipc://{path}"
        check_socket(path)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind {endpoint}: {exc}") from exc
        finally:
            os.umask(old_umask)
        os.chown(path, uid, gid, follow_symlinks=False)
        self._user_sockets[uid] = (endpoint, path)
        return endpoint

    # ---- agents ----

    def knows(self, name: str) -> bool:
        """Whether ``name`` was ever expected (and not forgotten)."""
        return name in self._agents

    def new_token(self, name: str) -> str:
        """The token only the next incarnation of ``name`` may say hello with."""
        agent = self._agents.setdefault(name, _Agent())
        agent.token = secrets.token_hex(16)
        return agent.token

    def revoke(self, name: str) -> None:
        """The incarnation is gone before it said hello, or after: its token is no longer good."""
        agent = self._agents.get(name)
        if agent is not None:
            agent.token = None

    def drop(self, name: str) -> bool:
        """Forget ``name``'s connection (its later frames need a new hello). True if it had one."""
        agent = self._agents.get(name)
        if agent is None or agent.session is None:
            return False
        self._sessions.pop(agent.session.identity, None)
        agent.session = None
        return True

    def forget(self, name: str) -> None:
        self._agents.pop(name, None)

    def session(self, name: str) -> Session | None:
        agent = self._agents.get(name)
        return agent.session if agent is not None else None

    def connected(self) -> list[Session]:
        return [a.session for a in self._agents.values() if a.session is not None]

    def anonymous(self) -> int:
        """How many anonymous sessions (``hello`` with no name: the cluster bridge's, scripts') are open."""
        return sum(1 for s in self._sessions.values() if s.name is None)

    def hand_over(self) -> list[dict[str, Any]]:
        """The agents' sessions, for the next image (daemon/broker/resume.py)."""
        return [{"name": s.name, "identity": s.identity.hex(), "received": s.received, "last_seen": s.last_seen,
                 "busy_until": s.busy_until} for s in self.connected()]

    def user_sockets(self) -> list[list[int]]:
        """[uid, gid] of each ``broker-UID.sock`` bound, for the next image to bind again (agents with ``user``)."""
        out = []
        for uid, (_, path) in self._user_sockets.items():
            with contextlib.suppress(OSError):
                out.append([uid, path.stat().st_gid])
        return out

    def adopt(self, sessions: list[dict[str, Any]]) -> None:
        """Sessions handed over by the previous image: each waits for its agent's first frame to ask it to resume."""
        for raw in sessions:
            session = Session(bytes.fromhex(raw["identity"]), raw["name"], float(raw["last_seen"]),
                              float(raw["busy_until"]), int(raw["received"]), resumable=True, resuming=True)
            self._sessions[session.identity] = session
            self._agents[raw["name"]] = _Agent(None, session)

    # ---- frames ----

    def send(self, identity: bytes, kind: str, **fields: Any) -> None:
        try:
            frame = wire.encode(kind, **fields)
        except wire.WireError as err:  # a reply too large for its frame: the caller still learns which call failed
            ref = fields.get("ref")
            frame = wire.encode(kind if kind == "reply" and ref is not None else "error", error=err.to_wire(),
                                **({"ref": ref} if kind == "reply" and ref is not None else {}))
        self.send_frame(identity, frame)

    def send_frame(self, identity: bytes, frame: bytes) -> None:
        """A frame encoded already (a delivery, encoded once when its size was checked at admission)."""
        try:
            self._sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("send to %r failed: %s", identity, exc)

    def look_again(self) -> None:
        """Sending may have consumed the socket's edge-triggered readiness: read on if frames wait."""
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        handled = 0
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            if len(frames) == 2:
                self._on_frame(frames[0], frames[1])
            elif len(frames) > 2:  # a peer's multipart message: one JSON frame per message is the protocol
                self.send(frames[0], "error", error=wire.error_body(
                    ErrorCode.BAD_REQUEST, f"a message is one frame, not {len(frames) - 1}"))
            handled += 1
            if handled >= READ_BURST:  # let other descriptors have a turn; come back at the end of it
                self._loop.call_soon(self._on_readable)
                break

    def _on_frame(self, identity: bytes, frame: bytes) -> None:
        try:
            msg = wire.decode(frame)
        except wire.WireError as err:
            self.send(identity, "error", error=err.to_wire())
            return
        session = self._sessions.get(identity)
        kind = msg["kind"]
        if kind == "hello":
            self._hello(identity, msg)
            return
        if session is None:
            self.send(identity, "error", error=wire.error_body(ErrorCode.UNAUTHORIZED, "say hello first"))
            return
        session.last_seen = self._loop.clock()
        if session.resuming:
            self._resuming(session, msg)
            return
        session.received += 1
        handler = self._handlers.get(kind)
        if handler is None:
            self.send(identity, "error", error=wire.error_body(ErrorCode.BAD_REQUEST, f"{kind} is not for the broker"))
            return
        try:
            handler(session, msg)
        except Exception as exc:  # a frame that passed validation but trips a bug: answer it, keep the daemon
            log.exception("broker: %s frame from %r failed", kind, session.name)
            self.send(identity, "error", error=wire.error_body(ErrorCode.INTERNAL, repr(exc)))

    def _resuming(self, session: Session, msg: dict[str, Any]) -> None:
        """A session handed over by the previous image: frames up to its ``resumed`` are dropped, as the agent sends
        again everything after the ``received`` it is told (the old image's last read; some never reached it)."""
        if msg["kind"] == "resumed":
            session.resuming = False
            log.info("%s resumed after the upgrade: %d of its frame(s) to come again", session.name,
                     max(0, msg["sent"] - session.received))
            if session.name is not None:
                self.on_resumed(session.name)
        elif not session.asked:
            session.asked = True
            self.send(session.identity, "resume", received=session.received)

    def _hello(self, identity: bytes, msg: dict[str, Any]) -> None:
        name, token = msg["name"], msg["token"]
        if name is None:
            self._sessions[identity] = Session(identity, None, self._loop.clock())
            self.send(identity, "welcome", name=None, heartbeat=self.heartbeat)
            return
        agent = self._agents.get(name)
        if agent is None or agent.token is None or not secrets.compare_digest(agent.token, token or ""):
            log.warning("refused hello as %r: wrong or used token", name)
            self.send(identity, "error", error=wire.error_body(ErrorCode.UNAUTHORIZED, f"bad token for {name!r}"))
            return
        agent.token = None  # one hello per incarnation
        session = Session(identity, name, self._loop.clock(), resumable=msg.get("resume") is True)
        self._sessions[identity] = session
        agent.session = session
        self.send(identity, "welcome", name=name, heartbeat=self.heartbeat, **self.welcome_fields(name))
        self._on_hello(name)
