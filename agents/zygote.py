"""A preloaded fork server ("zygote") for SDK agents: ``python -m agents.zygote FD``, started by foundationd.

    foundationd ──request (agent, env, cwd, umask) + output fd──> zygote (SDK, zmq, lmdb imported)
    zygote ──fork──> intermediate ──fork──> agent ; intermediate exits, so the agent is adopted by foundationd
    zygote ──reap intermediate──> reply {"pid": agent} ──> foundationd: pidfd_open, waitid as for any child

Why: an agent started by exec pays ~50-60 ms for the interpreter and the imports of zmq, lmdb and the SDK;
forked from here it pays ~1 ms of fork. Why the double fork: foundationd must be the agent's parent (it reaps
and reads the exit status through a pidfd, like any worker); it is a child subreaper, so the agent, orphaned
when the intermediate exits, comes back to it. The zygote answers only after it reaped the intermediate, so
the adoption has happened before foundationd hears the pid: the pid cannot be reaped by anybody else meanwhile.

Fork safety (DESIGN 2): nothing here creates a ZeroMQ context, an LMDB environment or a thread; the agent
makes its own after the fork, exactly as after an exec. The process title (``/proc/PID/cmdline``, what ps
shows) is rewritten to the exec'd agent's command line. What differs from an exec'd agent, on purpose:
``__main__`` is this module, and every agent forked from one zygote shares its hash seed. Agents whose
``env`` sets what only an exec applies (``PYTHON*``, ``LD_*``, ...) or that change user or limits are
exec'd by foundationd instead (daemon/forkserver.py decides).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import select
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import orjson
import setproctitle

from agents import runtime  # the preload: zmq, lmdb, orjson and the SDK, imported once for every agent

MAX_REQUEST = 1 << 20
ADOPTION_WAIT_MS = 5000  # the intermediate is already exiting; this only bounds a pathological stall


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m agents.zygote FD (foundationd starts me)", file=sys.stderr)
        return 2
    runtime.die_with_daemon()
    sock = socket.socket(fileno=int(args[0]))
    sock.send(orjson.dumps({"ready": True, "pid": os.getpid()}))
    return serve(sock)


def serve(sock: socket.socket) -> int:
    """Answer spawn requests one at a time until foundationd closes its end."""
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
        except ConnectionResetError:
            return 0
        if not data:
            for fd in fds:
                os.close(fd)
            return 0
        try:
            reply: dict[str, Any] = {"pid": spawn(orjson.loads(data), fds[0] if fds else -1, sock)}
        except Exception as exc:  # every failure goes back to foundationd, which execs instead
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(orjson.dumps(reply))


def spawn(request: dict[str, Any], output_fd: int, sock: socket.socket) -> int:
    """Fork the agent through an intermediate that exits at once; return the agent's pid once it is adopted."""
    if output_fd < 0:
        raise ValueError("the request carried no output fd")
    agent = request["agent"]
    if not isinstance(agent, str) or ":" not in agent:
        raise ValueError(f"bad agent reference {agent!r}")
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        intermediate = os.fork()
        if intermediate == 0:
            _intermediate(request, output_fd, sock, report_r, report_w)
        os.close(report_w)
        report_w = -1
        answer = _read_all(report_r)
        os.waitpid(intermediate, 0)
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
    if answer[:1] != b"P":
        raise RuntimeError(answer[1:].decode(errors="replace") or "the intermediate died before it forked")
    return int(answer[1:])


def _intermediate(request: dict[str, Any], output_fd: int, sock: socket.socket, report_r: int, report_w: int) -> None:
    try:
        os.close(report_r)
        pid = os.fork()
        if pid == 0:
            os.close(report_w)
            become_agent(request, output_fd, sock)
        # Both sides set the group (the classic race-free idiom): it exists before foundationd can signal it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        os.write(report_w, b"P%d" % pid)
    except BaseException as exc:  # reported to the zygote, which replies with it
        with contextlib.suppress(OSError):
            os.write(report_w, b"E" + f"{type(exc).__name__}: {exc}".encode())
    finally:
        os._exit(0)


def become_agent(request: dict[str, Any], output_fd: int, sock: socket.socket) -> None:
    """In the forked agent: become what an exec of ``python -m agents.runtime AGENT`` would give. Never returns."""
    code: Any = 1
    try:
        os.setpgid(0, 0)
        # ps, top and `pgrep -f` show what an exec'd agent shows, not the zygote's command line. First: its setup
        # needs the environment block the zygote started with, which the lines below replace.
        title = f"{sys.executable} -m agents.runtime {request['agent']}"
        setproctitle.setproctitle(title)
        setproctitle.setthreadtitle(os.path.basename(sys.executable))  # comm, which setproctitle also changed
        sock.detach()
        _redirect(output_fd)
        if request.get("umask") is not None:
            os.umask(int(request["umask"]))
        cwd = request.get("cwd")
        if cwd:
            os.chdir(cwd)
        env = {str(k): str(v) for k, v in request.get("env", {}).items()}
        os.environ.clear()
        os.environ.update(env)
        _show_environment(title, env)
        sys.argv = [runtime.__file__, request["agent"]]
        sys.path[0] = os.getcwd()  # what `python -m` puts first: the agent's working directory
        _wait_for_adoption(int(request["daemon_pid"]))
        code = runtime.main([request["agent"]])
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # as the interpreter would: print it, exit 1
        traceback.print_exc()
        code = 1
    finally:
        os._exit(_exit_status(code))


def _redirect(output_fd: int) -> None:
    """stdin from /dev/null, stdout and stderr into foundationd's pipe, every other fd of the zygote closed."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))


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
