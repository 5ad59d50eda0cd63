"""A preloaded fork server ("zygote") for SDK agents: ``python -m agents.zygote FD``, started by foundationd.

    foundationd ──{"spares": N}──> zygote (SDK, zmq, lmdb imported; no context, no environment, no thread)
    zygote ──fork──> intermediate ──fork──> spare ; the intermediate exits, foundationd adopts the spare
    zygote ──{"spare": pid} + the spare's socket (SCM_RIGHTS)──> foundationd, which keeps a pool of them
    foundationd ──request (agent, env, cwd, umask) + stdout and stderr fds──> a spare, which becomes that agent

Why: an agent started by exec pays ~50-60 ms for the interpreter and the imports of zmq, lmdb and the SDK.
A spare is an agent-to-be forked ahead of time (Android's unspecialised app processes): starting an agent is
one message to it, so foundationd never waits for a fork. A spare also makes its ZeroMQ context and connects its
DEALER to foundationd's broker socket while it waits (``_connect_ahead``), so the agent's own start-up is its
module, its LMDB store and the hello.

Why the double fork: foundationd must be the agent's parent (it reaps it and reads its exit status through a
pidfd, like any worker); it is a child subreaper, so the spare, orphaned when the intermediate exits, comes
back to it. The zygote reports a spare only after it reaped the intermediate: the adoption has happened
before foundationd hears of it. The spare waits for that too before it arms its parent-death signal, which
follows the parent: armed under the intermediate, the intermediate's exit would kill it.

Fork safety (DESIGN 2): the agent makes its ZeroMQ context and LMDB environment after the fork, exactly as
after an exec. Its process title (``/proc/PID/cmdline``, what ps shows) and ``/proc/PID/environ`` are
rewritten to what an exec'd agent's would be. What differs from an exec'd agent, on purpose: ``__main__`` is
this module, and every agent forked from one zygote shares its hash seed. Agents whose ``env`` sets what only
an exec applies (``PYTHON*``, ``LD_*``, ...) or that change user or limits are exec'd by foundationd instead
(daemon/shell/forkserver.py decides).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson
import setproctitle

from agents import runtime  # the preload: zmq, lmdb, orjson and the SDK, imported once for every agent
from agents.builtin import coordinator, task  # noqa: F401  (and the built-in agents: a workflow's process starts
from agents.workflow import process  # noqa: F401  at each `workflow run`, and its imports cost ~10 ms)
from ipc import wire

MAX_REQUEST = 1 << 20
MAX_SPARES = 16  # per request; foundationd asks for one or two at a time
ADOPTION_WAIT_MS = 5000  # the intermediate is already exiting; this only bounds a pathological stall


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m agents.zygote FD (foundationd starts me)", file=sys.stderr)
        return 2
    runtime.die_with_daemon()
    _default_signals()
    # Everything imported so far moves to the permanent generation: a child's collections never visit (and so
    # never copy-on-write) the pages the zygote shares with it.
    gc.freeze()
    sock = socket.socket(fileno=int(args[0]))
    sock.send(orjson.dumps({"ready": True, "pid": os.getpid()}))
    return serve(sock)


def _default_signals() -> None:
    """Agents start as a fresh interpreter under systemd would, whatever foundationd inherited (a script's
    ``foundationd &`` ignores SIGINT and SIGQUIT, and an ignored signal stays ignored across fork and exec): every
    signal at its default, SIGINT at Python's KeyboardInterrupt handler, none blocked. Python's own ignores
    (SIGPIPE, SIGXFSZ) stay, as in any interpreter; the runtime then sets its SIGTERM handler."""
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ}:
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def serve(sock: socket.socket) -> int:
    """Make the spares foundationd asks for, one request at a time, until it closes its end."""
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
        except ConnectionResetError:
            return 0
        for fd in fds:  # foundationd sends none; never keep one
            os.close(fd)
        if not data:
            return 0
        try:
            count = _spares_wanted(data)
        except ValueError as exc:
            sock.send(orjson.dumps({"error": str(exc)}))
            continue
        for _ in range(count):
            try:
                pid, channel = make_spare(sock)
            except Exception as exc:  # told to foundationd, which execs agents meanwhile
                sock.send(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}))
                break
            try:
                socket.send_fds(sock, [orjson.dumps({"spare": pid})], [channel.fileno()])
            finally:
                channel.close()


def _spares_wanted(data: bytes) -> int:
    try:
        request = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    count = request.get("spares") if isinstance(request, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SPARES:
        raise ValueError(f'expected {{"spares": 1..{MAX_SPARES}}}, got {data[:80]!r}')
    return count


def make_spare(zygote_sock: socket.socket) -> tuple[int, socket.socket]:
    """Fork a spare through an intermediate that exits at once; return its pid (adopted by foundationd by now)
    and foundationd's end of the spare's socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    answer = b""
    try:
        intermediate = os.fork()
        if intermediate == 0:
            _intermediate(zygote_sock, ours, theirs, report_r, report_w)
        os.close(report_w)
        report_w = -1
        answer = _read_all(report_r)
        os.waitpid(intermediate, 0)
    finally:
        theirs.close()
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
        if answer[:1] != b"P":  # failed, however: foundationd's end goes too
            ours.close()
    if answer[:1] != b"P":
        raise RuntimeError(answer[1:].decode(errors="replace") or "the intermediate died before it forked")
    return int(answer[1:]), ours


def _intermediate(zygote_sock: socket.socket, ours: socket.socket, theirs: socket.socket, report_r: int,
                  report_w: int) -> None:
    try:
        os.close(report_r)
        pid = os.fork()
        if pid == 0:
            os.close(report_w)
            ours.close()
            spare(zygote_sock, theirs)
        # Both sides set the group (the classic race-free idiom): it exists before foundationd can signal it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        os.write(report_w, b"P%d" % pid)
    except BaseException as exc:  # reported to the zygote, which tells foundationd
        with contextlib.suppress(OSError):
            os.write(report_w, b"E" + f"{type(exc).__name__}: {exc}".encode())
    finally:
        os._exit(0)


def spare(zygote_sock: socket.socket, channel: socket.socket) -> NoReturn:
    """An agent-to-be: wait for foundationd's adoption, then for the one request that makes it an agent.
    Exits 0 when foundationd closes the channel unused."""

    def wait() -> Any:
        os.setpgid(0, 0)
        zygote_sock.close()  # the zygote's channel to foundationd is not ours
        _wait_for_adoption(int(os.environ["FOUNDATION_DAEMON_PID"]))
        runtime.die_with_daemon()
        setproctitle.setproctitle(f"{sys.executable} -m agents.zygote (spare)")
        _close_inherited(keep=channel.fileno())  # before the context exists: its descriptors are to stay
        connection = _connect_ahead()
        data, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST, 2)
        channel.close()
        if not data or len(fds) != 2:
            return 0
        return become_agent(orjson.loads(data), fds[0], fds[1], connection)

    _exit_after(wait)


def _close_inherited(keep: int) -> None:
    """Every descriptor of the zygote but stdio and ``keep`` (the spare's channel), closed."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def _connect_ahead() -> runtime.Connection | None:
    """The agent's DEALER, connected to foundationd's broker socket while the spare waits: the ZeroMQ context, its
    I/O thread and the connection's handshake (~2-3 ms of an agent's start) are done before the agent is asked for.
    Made after the fork, as fork safety wants (DESIGN 2). The runtime uses it when its endpoint is the agent's; an
    agent with ``user`` (another broker socket) is exec'd anyway. None if it cannot be made: the runtime connects."""
    runtime_dir = os.environ.get("FOUNDATION_RUNTIME_DIR")
    if not runtime_dir:
        return None
    try:
        return runtime.Connection(f"ipc://{os.path.join(runtime_dir, wire.BROKER_SOCKET)}")
    except Exception:  # the runtime makes its own; an agent still starts
        return None


def become_agent(request: dict[str, Any], stdout_fd: int, stderr_fd: int,
                 connection: runtime.Connection | None = None) -> Any:
    """In a spare: become what an exec of ``python -m agents.runtime AGENT`` would give; the runtime's status."""
    agent = request["agent"]
    if not isinstance(agent, str) or ":" not in agent:
        raise ValueError(f"bad agent reference {agent!r}")
    # ps, top and `pgrep -f` show what an exec'd agent shows. Before the environment changes: the title's room
    # includes the environment block the zygote started with (see _show_environment).
    title = f"{sys.executable} -m agents.runtime {agent}"
    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(os.path.basename(sys.executable))  # comm, which setproctitle also changed
    _redirect(stdout_fd, stderr_fd, close_others=connection is None)
    if request.get("umask") is not None:
        os.umask(int(request["umask"]))
    cwd = request.get("cwd")
    if cwd:
        os.chdir(cwd)
    env = {str(k): str(v) for k, v in request.get("env", {}).items()}
    os.environ.clear()
    os.environ.update(env)
    _show_environment(title, env)
    sys.argv = [runtime.__file__, agent]
    sys.path.insert(0, os.getcwd())  # what `python -m` puts first: the agent's working directory
    return runtime.main([agent], connection)


def _exit_after(work: Callable[[], Any]) -> NoReturn:
    """Run ``work`` and exit with its status, as the interpreter would have: SystemExit's code, or a traceback
    and 1; never back into the zygote's code that forked us."""
    code: Any = 1
    try:
        code = work()
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # as the interpreter would: print it, exit 1
        traceback.print_exc()
        code = 1
    finally:
        os._exit(_exit_status(code))


def _redirect(stdout_fd: int, stderr_fd: int, *, close_others: bool = True) -> None:
    """stdin from /dev/null, stdout and stderr into foundationd's two pipes, every other fd of the zygote closed
    (``close_others``; else the spare closed them before it connected ahead, and only the ones given are)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    if close_others:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    else:
        for fd in {devnull, stdout_fd, stderr_fd} - {0, 1, 2}:
            os.close(fd)


def _show_environment(title: str, env: dict[str, str]) -> None:
    """Make /proc/PID/environ show the agent's environment, as an exec'd agent's does (psutil, ps e and leak checks
    read it there). setproctitle moved the C environment to the heap and blanked the block the kernel shows: after
    the title, it is ours to fill; foundationd gives the zygote a large FOUNDATION_ENVIRON_ROOM to make room."""
    fields = Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[1].split()
    arg_start, arg_end, env_start, env_end = (int(fields[i]) for i in (45, 46, 47, 48))  # stat fields 48-51
    if env_start != arg_end + 1 and env_start != arg_end:
        return  # not one block: setproctitle left the environment where it was
    if Path("/proc/self/cmdline").read_bytes().split(b"\0", 1)[0] != title.encode():
        return
    start = max(env_start, arg_start + len(title.encode()) + 1)
    block = bytearray()
    for key, value in env.items():
        entry = f"{key}={value}".encode() + b"\0"
        if len(block) + len(entry) > env_end - start:
            break
        block += entry
    ctypes.memmove(start, bytes(block), len(block))


def _wait_for_adoption(daemon_pid: int) -> None:
    """Return once foundationd is the parent. The parent-death signal the runtime arms next follows the parent:
    armed while the intermediate was still the parent, its exit would kill us."""
    parent = os.getppid()
    if parent == daemon_pid:
        return
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        return  # gone already, so the adoption has happened
    try:
        if os.getppid() == parent:  # still our parent: the pidfd names it, and it becomes readable at its exit
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll(ADOPTION_WAIT_MS)
    finally:
        os.close(fd)
    # The runtime checks the parent next, and exits if it is not foundationd (foundationd itself died).


def _exit_status(code: Any) -> int:
    """SystemExit's code as the interpreter turns it into a status, after the exit functions an exec'd agent runs."""
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        with contextlib.suppress(BaseException):
            print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    return status


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


if __name__ == "__main__":
    raise SystemExit(main())
