"""The process shell: fork/exec, signals, reaping and output capture for worker processes.

    spawn ──> posix_spawn or Popen (own group) of foundation-exec or setpriv ──> pidfd + 2 output pipes on the loop
    stdout pipe, stderr pipe ──> complete lines ──> on_output(name, "stdout" | "stderr", lines)
    pidfd readable / SIGCHLD ──> reap(): waitid(WNOWAIT) ─> SIGKILL leftover group ─> waitpid ─> Exited

* No Python code runs between fork and exec (no preexec_fn): once libzmq's I/O threads exist the
  daemon is multi-threaded, and only async-signal-safe work is allowed in the child. The parent-death
  signal is set by ``foundation-exec`` (daemon/native/) exec'd in front of the command, which checks that
  the daemon is still the parent (it may have died before the signal was armed), closes every descriptor
  but 0-2, gives every signal its default disposition, unblocks them all and execs the command; without a C
  compiler at install, by util-linux ``setpriv`` and a ``/bin/sh`` guard (``spawn_path`` says which, and
  ``foundationctl status`` shows it). Through the helper a plain child is one ``posix_spawn`` (see
  ``start_process``). setup.py builds the helper into the package (daemon/shell/bin/) at ``pip install``.
* Every child starts with default signal dispositions and an empty signal mask, as under systemd, whatever
  foundationd inherited (a non-interactive shell's ``foundationd &`` ignores SIGINT and SIGQUIT, and an ignored
  signal stays ignored across exec): posix_spawn's ``setsigdef``/``setsigmask``, then the helper in C; without
  the helper, coreutils ``env --default-signal`` in the chain when the daemon has signals ignored, and an empty
  mask around Popen. The zygote and the guardian reset their own (agents/zygote.py, guardian.py).
* The daemon is a child subreaper, so a child's orphaned grandchildren come back to it; ``reap``
  collects every zombie, ours or adopted, and kills what is left of a dead worker's process group,
  while the dead leader's zombie still pins the group id against reuse.
* A pidfd names each worker for its whole life: signals to the leader go through it, so a recycled
  PID can never be hit.
* Users and limits cost nothing to children that do not set them. ``user``/``group``/``umask`` are Popen's
  own arguments: CPython's child does umask, setgroups (the user's groups, os.getgrouplist), setgid, setuid
  in C before the first exec; the names are looked up once per spec (daemon/shell/credentials.py), and the exec
  chain is checked to be within the user's reach before the fork (a clear SpawnError, not a crash loop). A helper
  that user cannot reach (a venv in a 0700 home) is left out of that child's chain: setpriv does its job.
  ``limits`` put util-linux ``prlimit`` last in the exec chain (``setpriv ... sh -c GUARD PID prlimit
  --nofile=S:H ... -- COMMAND``), so they bind the command itself; prlimit runs as the target user, so a hard
  limit above the daemon's own can only be raised for a child that stays root (refused at spawn otherwise,
  rather than failing in the child).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.core.protocol import Exited
from daemon.core.spec import WorkerSpec
from daemon.shell import forkserver
from daemon.shell.credentials import Credentials, Identity, SpawnError, unreachable
from daemon.shell.forkserver import ForkServer
from daemon.shell.guardian import GuardianLink
from daemon.shell.logs import STDERR, STDOUT

log = logging.getLogger("foundationd")

PR_SET_CHILD_SUBREAPER = 36
GUARDIAN_NAME = "(guardian)"  # like "(zygote)", never a child's name
GUARDIAN_EXIT_WAIT = 5.0
MAX_PARTIAL_LINE = 64 * 1024
PDEATH_GUARD = '[ "$PPID" = "$0" ] && exec "$@"'  # sh -c GUARD DAEMON_PID COMMAND...
# Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: Popen's restore_signals
# puts these back to their defaults in its child. posix_spawn resets every signal that can be (glibc does it in C
# in its vfork child, where it looks at each one anyway).
RESET_SIGNALS = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))
PYTHON_IGNORES = frozenset({signal.SIGPIPE, signal.SIGXFSZ})  # what Popen's restore_signals resets
HELPER_NAME = "foundation-exec"
PACKAGED_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", HELPER_NAME)  # by setup.py
# Only these pass from the daemon's environment to a child; the config adds the rest.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")


__all__ = ["ProcessHandle", "ProcessShell", "SpawnError", "find_exec_helper", "start_process"]


def helper_candidates() -> list[str]:
    """Where foundation-exec may be: in the package (setup.py puts it there at ``pip install``, editable or not),
    then in the venv's bin/ (where ``make exec-helper`` put it before the package build did)."""
    return [PACKAGED_HELPER, os.path.join(os.path.dirname(sys.executable), HELPER_NAME)]


def find_exec_helper() -> str | None:
    """daemon/native/foundation-exec as built at install time when a C compiler was there, else None.

    FOUNDATION_EXEC_HELPER names another one, or "none" to use the setpriv chain (tests compare both paths).
    """
    chosen = os.environ.get("FOUNDATION_EXEC_HELPER")
    if chosen == "none":
        return None
    for path in [chosen] if chosen else helper_candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def inherited_ignores() -> list[int]:
    """Signals this process ignores beyond Python's own, inherited from whoever started it: what a child must not
    inherit in turn (``foundationd &`` from a script ignores SIGINT and SIGQUIT)."""
    return sorted(s for s in RESET_SIGNALS if s not in PYTHON_IGNORES and signal.getsignal(s) == signal.SIG_IGN)


@contextlib.contextmanager
def _unblocked() -> Iterator[None]:
    """No signal blocked in this thread meanwhile: Popen's child starts with the mask of the thread that forks."""
    old = signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        yield
    finally:
        if old:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start_process(
    argv: list[str],
    env: dict[str, str],
    out_fds: tuple[int, int],
    *,
    cwd: str | None = None,
    credentials: dict[str, Any] | None = None,
    helper: str | None = None,
) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start ``argv`` in a process group of its own, stdin on /dev/null, stdout and stderr on ``out_fds``.

    Returns the pid, and the Popen when one was used. A child whose argv starts with the exec ``helper`` and
    that has nothing to change before its exec (working directory, user, group, umask: ``credentials``) is
    one ``os.posix_spawn``: glibc's vfork child sets the group, the descriptors and the default signal
    dispositions in C and execs, and the helper closes every other descriptor (what Popen's ``close_fds``
    does). Popen's Python around the same vfork cost ~40 us more per start; the rest still goes through it,
    as does an output fd of 0-2 (a dup2 onto itself would leave it close-on-exec; Popen handles that case).
    Either way a failed exec raises OSError here, before the caller goes on.
    """
    out_fd, err_fd = out_fds
    if helper is not None and argv[0] == helper and cwd is None and not credentials and min(out_fds) > 2:
        stdio = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0), (os.POSIX_SPAWN_DUP2, out_fd, 1),
                 (os.POSIX_SPAWN_DUP2, err_fd, 2)]
        return os.posix_spawn(argv[0], argv, env, file_actions=stdio, setpgroup=0, setsigdef=RESET_SIGNALS,
                              setsigmask=()), None
    with _unblocked():
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            env=env,
            cwd=cwd,
            process_group=0,
            close_fds=True,
            **(credentials or {}),
        )
    return popen.pid, popen


@contextlib.contextmanager
def output_pipes() -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """A child's two output pipes, stdout's and stderr's: yields (our read ends, the child's write ends).

    The write ends are closed on the way out, whatever happened (the child has its copies); the read ends too if
    the block raised. What the block does with the read ends otherwise is its own business.
    """
    fds: list[int] = []
    handed_over = False
    try:
        fds.extend(os.pipe2(os.O_CLOEXEC))
        fds.extend(os.pipe2(os.O_CLOEXEC))
        yield (fds[0], fds[2]), (fds[1], fds[3])
        handed_over = True  # (not reached when the block raised)
    finally:
        for fd in fds[1::2] if handed_over else fds:
            os.close(fd)


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@dataclass
class OutputPipe:
    """Our read end of one of a child's output pipes, and the line it has not finished yet."""

    fd: int
    stream: str  # STDOUT or STDERR
    partial: bytearray = field(default_factory=bytearray)


@dataclass
class ProcessHandle:
    name: str
    pid: int
    pidfd: int
    popen: subprocess.Popen[bytes] | None  # None when posix_spawn'd, or for an agent forked by the zygote
    pipes: list[OutputPipe]  # stdout's and stderr's, each until its EOF
    on_exit: Callable[[Exited], None] | None = None  # instead of the shell's own (the zygote's, the guardian's)
    guarded: bool = True  # its group is on the guardian's list (all but the guardian itself)


class ProcessShell:
    """Spawns workers, signals their groups and turns their deaths into ``Exited`` events."""

    def __init__(
        self,
        add_reader: Callable[[int, Callable[[], None]], None],
        remove_reader: Callable[[int], None],
        on_exit: Callable[[Exited], None],
        on_output: Callable[[str, str, list[bytes]], None],
        base_env: dict[str, str] | None = None,
        *,
        fork_server: bool = True,
    ) -> None:
        self._add_reader = add_reader
        self._remove_reader = remove_reader
        self._on_exit = on_exit
        self._on_output = on_output  # (child name, STDOUT or STDERR, complete lines without their newline)
        self._base_env = base_env or {}
        # Read once: the daemon's own environment does not change, and os.environ costs ~1.5 us a variable.
        self._inherited_env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        self._by_pid: dict[int, ProcessHandle] = {}
        # Called before exits are collected: what a child said just before it exited (sd_notify datagrams) is
        # heard while its zombie still names its group.
        self.before_reap: Callable[[], None] | None = None
        self._setpriv = shutil.which("setpriv")
        self._sh = shutil.which("sh")
        self.exec_helper = find_exec_helper()
        self._prlimit = shutil.which("prlimit")
        self.credentials = Credentials()
        self._ignores = inherited_ignores()
        self._env_reset: list[str] | None = None  # `env --default-signal`, found when first needed
        if self.exec_helper is None:
            self._say_no_helper()
        self.zygote = ForkServer(self._launch_zygote, lambda pid: self.signal(pid, signal.SIGKILL), self._adopt_spare,
                                 add_reader=add_reader, remove_reader=remove_reader, env=self._zygote_env,
                                 enabled=fork_server)
        self.guardian = GuardianLink(self._launch_guardian, lambda pid: self.signal(pid, signal.SIGKILL),
                                     lambda message: log.warning("%s", message))

    @property
    def live(self) -> dict[int, ProcessHandle]:
        return self._by_pid

    @property
    def spawn_path(self) -> str:
        """How commands are started: "foundation-exec" (the fast path), "setpriv" (its fallback chain), or
        "exec" (neither: no parent-death signal)."""
        if self.exec_helper is not None:
            return HELPER_NAME
        return "setpriv" if self._setpriv is not None else "exec"

    def _say_no_helper(self) -> None:
        if os.environ.get("FOUNDATION_EXEC_HELPER") == "none":
            log.info("spawning through %s (FOUNDATION_EXEC_HELPER=none)", self.spawn_path)
            return
        log.warning("%s not found (looked for %s): spawning through %s, about 1 ms slower per start; "
                    "reinstall with a C compiler (pip install .) to get it", HELPER_NAME,
                    ", ".join(os.environ.get("FOUNDATION_EXEC_HELPER") or helper_candidates()), self.spawn_path)

    def clear_credentials(self) -> None:
        """Look users and groups up again at the next spawns (call at a reload: the name service may have changed)."""
        self.credentials.clear()

    def spawn(self, spec: WorkerSpec, extra_env: dict[str, str] | None = None) -> int:
        if forkserver.fork_refusal(spec) is None:
            forked = self._spawn_forked(spec, extra_env or {})
            if forked is not None:
                return forked
        identity = self.credentials.of(spec)
        argv = self._argv(spec, identity)
        env = self._env(spec, identity.env)
        env.update(extra_env or {})
        try:
            with output_pipes() as (reads, writes):
                pid, popen = start_process(argv, env, writes, cwd=spec.working_dir, credentials=identity.popen,
                                           helper=self.exec_helper)
        except OSError as exc:
            raise SpawnError(f"{argv[0]}: {exc.strerror or exc}") from exc
        self._watch(ProcessHandle(spec.name, pid, os.pidfd_open(pid), popen, _pipes(reads)))
        return pid

    def start_zygote(self, agents: int = 0) -> None:
        """Start the agent fork server now (at boot, when the tree has agents), so it imports while we boot; its pool
        of spares sized for ``agents``."""
        self.zygote.size_for(agents)
        self.zygote.start()

    def _zygote_env(self) -> dict[str, str]:
        env = self._helper_env(forkserver.NAME)
        env[forkserver.ROOM_VARIABLE] = "." * forkserver.ENVIRON_ROOM
        return env

    def start_guardian(self) -> None:
        """Start the guardian before the first child, so that no process group is ever unlisted."""
        self.guardian.start()

    def _helper_env(self, name: str) -> dict[str, str]:
        env = dict(self._inherited_env)
        env.update(self._base_env)
        env.update(FOUNDATION_NAME=name, FOUNDATION_DAEMON_PID=str(os.getpid()))
        return env

    def _launch_zygote(self, argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...]) -> int:
        on_exit = lambda event: self.zygote.exited(event.pid, event.describe())  # noqa: E731
        return self._launch_own(forkserver.NAME, argv, env, on_exit, pass_fds=pass_fds)

    def _adopt_spare(self, pid: int) -> None:
        """A spare the zygote made (already our child): watched until it becomes an agent or dies unused."""
        on_exit = lambda event: self.zygote.spare_exited(event.pid)  # noqa: E731
        self._watch(ProcessHandle(forkserver.SPARE_NAME, pid, os.pidfd_open(pid), None, [], on_exit=on_exit))

    def _launch_guardian(self, argv: list[str], stdin_fd: int) -> int:
        on_exit = lambda event: self.guardian.exited(event.describe())  # noqa: E731
        return self._launch_own(GUARDIAN_NAME, argv, self._helper_env(GUARDIAN_NAME), on_exit, stdin=stdin_fd,
                                guarded=False)

    def _launch_own(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        on_exit: Callable[[Exited], None],
        *,
        stdin: int = subprocess.DEVNULL,
        pass_fds: tuple[int, ...] = (),
        guarded: bool = True,
    ) -> int:
        """Start one of foundationd's own helper processes (zygote, guardian): output captured, exit reported."""
        with output_pipes() as (reads, writes), _unblocked():
            popen = subprocess.Popen(argv, stdin=stdin, stdout=writes[0], stderr=writes[1], env=env,
                                     process_group=0, close_fds=True, pass_fds=pass_fds)
        pidfd = os.pidfd_open(popen.pid)
        self._watch(ProcessHandle(name, popen.pid, pidfd, popen, _pipes(reads), on_exit=on_exit, guarded=guarded))
        return popen.pid

    def _spawn_forked(self, spec: WorkerSpec, extra_env: dict[str, str]) -> int | None:
        """An agent made of a spare from the zygote, or None when there is none (the caller execs it instead)."""
        if self.zygote.state == "disabled":
            return None
        if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
            raise SpawnError(f"{spec.working_dir}: working directory does not exist")
        env = self._env(spec)
        env.update(extra_env)
        request = {"agent": spec.agent, "env": env, "cwd": spec.working_dir or os.getcwd(), "umask": spec.umask}
        with output_pipes() as (reads, writes):
            pid = self.zygote.spawn(request, writes)
            if pid is None:
                for fd in reads:
                    os.close(fd)
                return None
        # The spare's handle (our child since its adoption) becomes the agent's: its name, its output pipes.
        handle = self._by_pid[pid]
        handle.name, handle.on_exit, handle.pipes = spec.name, None, _pipes(reads)
        self._watch_output(handle)
        return pid

    def adopt(self, handle: ProcessHandle) -> None:
        """Watch a process handed over by the previous image (in-place upgrade): pidfd and pipes already open."""
        for fd in (handle.pidfd, *(p.fd for p in handle.pipes)):
            os.set_inheritable(fd, False)
        self._watch(handle)

    def _watch(self, handle: ProcessHandle) -> None:
        self._by_pid[handle.pid] = handle
        if handle.guarded:
            self.guardian.add(handle.pid)
        self._add_reader(handle.pidfd, self.reap)
        self._watch_output(handle)

    def _watch_output(self, handle: ProcessHandle) -> None:
        for pipe in handle.pipes:
            os.set_blocking(pipe.fd, False)
            self._add_reader(pipe.fd, functools.partial(self._read_output, handle, pipe))

    def identity(self, spec: WorkerSpec) -> tuple[int, int] | None:
        """The (uid, gid) a child with ``user`` runs as, else None; SpawnError if the user is gone."""
        if spec.user is None:
            return None
        identity = self.credentials.of(spec)
        return identity.popen["user"], identity.popen["group"]

    def check(self, spec: WorkerSpec) -> None:
        """Raise SpawnError now if ``spawn(spec)`` could not start the command (for the attach verb)."""
        self._argv(spec, self.credentials.of(spec))
        if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
            raise SpawnError(f"{spec.working_dir}: working directory does not exist")

    def signal(self, pid: int, sig: int) -> None:
        """Signal the worker's whole process group; the leader through its pidfd."""
        handle = self._by_pid.get(pid)
        if handle is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(handle.pidfd, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def reap(self) -> None:
        """Collect every child that has exited: workers become Exited events, adopted orphans vanish."""
        if self.before_reap is not None:
            self.before_reap()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            handle = self._by_pid.pop(info.si_pid, None)
            if handle is not None:
                # The zombie leader still holds the group id: nothing else can have taken it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(handle.pid, signal.SIGKILL)
                if handle.guarded:
                    self.guardian.remove(handle.pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, 0)
            if handle is not None:
                self._finish(handle, info)

    def _finish(self, handle: ProcessHandle, info: os.waitid_result) -> None:
        self._remove_reader(handle.pidfd)
        os.close(handle.pidfd)
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        if handle.popen is not None:
            handle.popen.returncode = -info.si_status if killed else info.si_status
        self._drain_output(handle)
        (handle.on_exit or self._on_exit)(
            Exited(
                handle.name,
                handle.pid,
                status=None if killed else info.si_status,
                signal=info.si_status if killed else None,
            )
        )

    def close(self) -> None:
        """Kill and reap whatever is still running; only used when the daemon itself is going away.

        The guardian goes last and by EOF: it exits on its own once every group it watched is gone.
        """
        self.zygote.close()
        others = [h for h in self._by_pid.values() if h.guarded]
        for handle in others:
            self.signal(handle.pid, signal.SIGKILL)
        for handle in others:
            os.waitid(os.P_PIDFD, handle.pidfd, os.WEXITED | os.WNOWAIT)
        self.reap()
        self.guardian.close()
        for handle in list(self._by_pid.values()):  # the guardian, reading its EOF
            if not select.select([handle.pidfd], [], [], GUARDIAN_EXIT_WAIT)[0]:
                self.signal(handle.pid, signal.SIGKILL)
            os.waitid(os.P_PIDFD, handle.pidfd, os.WEXITED | os.WNOWAIT)
        self.reap()

    # ---- output ----

    def _read_output(self, handle: ProcessHandle, pipe: OutputPipe) -> bool:
        """Read once from ``pipe``; False when there was nothing to read now (or ever again: it is closed)."""
        try:
            data = os.read(pipe.fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            self._close_output(handle, pipe)
            return False
        self._emit_lines(handle, pipe, data)
        return True

    def _drain_output(self, handle: ProcessHandle) -> None:
        """Read what the dead worker left in its pipes; grandchildren were killed with its group. A pipe that a
        writer outside the group still holds stays open, its reader registered, until that writer is gone too."""
        for pipe in list(handle.pipes):
            while self._read_output(handle, pipe):
                pass

    def _emit_lines(self, handle: ProcessHandle, pipe: OutputPipe, data: bytes) -> None:
        pipe.partial += data
        cut = pipe.partial.rfind(b"\n") + 1
        if cut == 0 and len(pipe.partial) < MAX_PARTIAL_LINE:
            return
        if cut == 0:
            cut = len(pipe.partial)
        complete, pipe.partial = bytes(pipe.partial[:cut]), pipe.partial[cut:]
        if complete.endswith(b"\n"):
            complete = complete[:-1]
        self._on_output(handle.name, pipe.stream, complete.split(b"\n"))

    def _close_output(self, handle: ProcessHandle, pipe: OutputPipe) -> None:
        if pipe.partial:
            self._emit_lines(handle, pipe, b"\n")
        self._remove_reader(pipe.fd)
        os.close(pipe.fd)
        handle.pipes.remove(pipe)

    # ---- argv and environment ----

    def _argv(self, spec: WorkerSpec, identity: Identity | None = None) -> list[str]:
        """The exec chain of ``spec``: [helper or setpriv chain] [env reset] [prlimit ...] command.

        For a child that runs as another user, every program of it is checked to be within that user's reach.
        """
        uid = identity.uid if identity is not None else None
        # An agent runs under the daemon's own interpreter, never a `python3` found on PATH (a pyenv shim
        # costs ~80 ms a start).
        agent_argv = [sys.executable, "-m", "agents.runtime", spec.agent] if spec.agent else None
        command = agent_argv or list(spec.command)
        resolved = resolve_program(command[0], spec)
        command[0] = resolved
        programs = [resolved]
        if spec.limits:
            command = [*self._prlimit_argv(spec, uid), "--", *command]
            programs.append(command[0])
        # Another user than root: what it execs must be within its reach (root's is everything).
        stranger = (uid, identity.gids) if identity is not None and uid is not None and uid != 0 else None
        if stranger is not None:
            self._check_reach(spec, programs, *stranger)
        helper = self.exec_helper
        if helper is not None and stranger is not None and unreachable(helper, *stranger) is not None:
            helper = None  # the daemon's own helper in a 0700 home: setpriv does its job for this child
        if helper is not None:  # one exec: parent-death signal, parent check, default signals, then the program
            return [helper, str(os.getpid()), *command]
        prefix = self._fallback_prefix(spec)
        if stranger is not None:
            self._check_reach(spec, [arg for arg in prefix if os.path.isabs(arg)], *stranger)
        return [*prefix, *command]

    def _fallback_prefix(self, spec: WorkerSpec) -> list[str]:
        """What the chain has in front of the command without the helper: the parent-death signal by setpriv and
        a shell guard, and the default signals by ``env`` when foundationd has some ignored."""
        reset = self._signal_reset()
        if spec.agent and not spec.limits:
            return reset  # the agent runtime arms its own parent-death signal and checks its parent (2 execs less)
        if self._setpriv is None:
            return reset
        if self._sh is None:
            return [self._setpriv, "--pdeathsig", "KILL", "--", *reset]
        # PDEATHSIG only covers a death after setpriv armed it: the guard, run after that, exits unless its
        # parent is still this daemon, so a daemon SIGKILLed right after a spawn leaves no orphan behind.
        return [self._setpriv, "--pdeathsig", "KILL", "--", *reset, self._sh, "-c", PDEATH_GUARD, str(os.getpid())]

    def _signal_reset(self) -> list[str]:
        """``env --default-signal`` when foundationd ignores signals a child must not inherit, else nothing."""
        if not self._ignores:
            return []
        if self._env_reset is None:
            self._env_reset = _find_env_reset()
            if not self._env_reset:
                names = ", ".join(signal.Signals(s).name for s in self._ignores)
                log.warning("foundationd ignores %s, and without %s or coreutils env --default-signal its "
                            "children will too", names, HELPER_NAME)
        return self._env_reset

    def _check_reach(self, spec: WorkerSpec, programs: list[str], uid: int, gids: frozenset[int]) -> None:
        """SpawnError naming the first program (or, for an agent, the SDK's directory) ``uid`` cannot reach."""
        for program in programs:
            problem = unreachable(program, uid, gids, spec.working_dir)
            if problem is not None:
                raise SpawnError(f"{problem}: the child runs as uid {uid} and could not start; "
                                 "install it where that user can reach it")
        if spec.agent:
            sdk = importlib.util.find_spec("agents")  # where the SDK is, without importing it (daemon/ may not)
            problem = unreachable(sdk.origin, uid, gids) if sdk is not None and sdk.origin else None
            if problem is not None and "may not enter" in problem:
                raise SpawnError(f"{problem}: the agent runs as uid {uid} and could not import the SDK")

    def _env(self, spec: WorkerSpec, user_env: dict[str, str] | None = None) -> dict[str, str]:
        env = self._helper_env(spec.name)
        env.update(user_env or {})
        env.update(dict(spec.env))
        return env

    # ---- users and limits ----

    def _credentials(self, spec: WorkerSpec) -> tuple[dict[str, Any], dict[str, str]]:
        """Popen's user/group/extra_groups/umask arguments for ``spec``, and the HOME/USER/LOGNAME it implies."""
        identity = self.credentials.of(spec)
        return identity.popen, identity.env

    def _prlimit_argv(self, spec: WorkerSpec, uid: int | None) -> list[str]:
        if self._prlimit is None:
            raise SpawnError("limits need util-linux prlimit, which is not on foundationd's PATH")
        privileged = os.geteuid() == 0 and uid in (None, 0)
        argv = [self._prlimit]
        for name, soft, hard in spec.limits:
            if not privileged:
                _check_hard_limit(name, hard, uid)
            argv.append(f"--{name}={_rlim(soft)}:{_rlim(hard)}")
        return argv


def _pipes(reads: tuple[int, int]) -> list[OutputPipe]:
    return [OutputPipe(reads[0], STDOUT), OutputPipe(reads[1], STDERR)]


def resolve_program(program: str, spec: WorkerSpec) -> str:
    """The program as exec will find it (PATH from the child's env, a path with a slash from its working
    directory); SpawnError when it is not there. With setpriv in front, exec of a bad path would fail only in the
    child, as an exit 127 crash: hence the check before spawning (and in ``foundationd --check``)."""
    path = dict(spec.env).get("PATH", os.environ.get("PATH", os.defpath))
    resolved = shutil.which(program, path=path) if "/" not in program else program
    if resolved is None:
        raise SpawnError(f"{program}: command not found on PATH")
    target = os.path.join(spec.working_dir or "", resolved) if "/" in program else resolved
    if not (os.path.isfile(target) and os.access(target, os.X_OK)):
        raise SpawnError(f"{program}: not an executable file")
    return resolved


def _rlim(value: int) -> str:
    return "unlimited" if value < 0 else str(value)


def _check_hard_limit(name: str, hard: int, uid: int | None) -> None:
    """Only root (CAP_SYS_RESOURCE) raises a hard limit: say so now instead of letting the child crash-loop."""
    _, current = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))
    if current == resource.RLIM_INFINITY or 0 <= hard <= current:
        return
    who = f"uid {uid}" if uid is not None else f"foundationd's uid {os.geteuid()}"
    raise SpawnError(
        f"limits.{name}: hard limit {_rlim(hard)} is above foundationd's own ({current}), and the child runs as "
        f"{who}: only root can raise it"
    )


def _find_env_reset() -> list[str]:
    """coreutils ``env --default-signal`` (8.31 and later) if this system has it, else an empty list."""
    env = shutil.which("env")
    if env is None:
        return []
    try:
        subprocess.run([env, "--default-signal", "true"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [env, "--default-signal"]
