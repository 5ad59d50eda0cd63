"""The supervisors compared by bench/compare.py: Foundation, circusd and supervisord, launched the same way.

Each ``Target`` is one supervisor with one set of settings. ``launch`` writes its config for N copies of
one command into a fresh temporary directory, starts the daemon from this virtualenv's console scripts
(``foundationd``, ``circusd``, ``supervisord``) and yields a ``Run``; however the block is left (return,
exception, Ctrl-C, SIGTERM turned into SystemExit by the harness) the daemon gets SIGTERM, then SIGKILL
after a grace period, is waited for, and every process it left behind is killed and reaped. The harness
makes itself a child subreaper (``become_subreaper``) so that anything a daemon orphans comes back to it
rather than to init, where it could not be seen as ours.

The work is the same for all three: N copies of ``sleep 100000``, as N Foundation workers under a
one_for_one root, one circus watcher with ``numprocesses = N``, one supervisord program with
``numprocs = N``. Each daemon's children are read from /proc (direct children that have exec'd ``sleep``),
so "running" means the same thing for all three whatever their own status says.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from circus.client import CircusClient
from supervisor.xmlrpc import SupervisorTransport

if __name__ == "__main__":  # `python bench/anchors.py` prints the configs: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import argv0, child_pids, workers_config
from ipc.control import ControlClient

BIN = Path(sys.executable).parent  # the bench virtualenv's console scripts live next to its python
SLEEP = shutil.which("sleep") or "/usr/bin/sleep"
SLEEP_ARGV = [SLEEP, "100000"]
COUNTER = "agents.examples.counter:Counter"
STOP_GRACE = 30.0  # seconds a daemon gets after SIGTERM before SIGKILL (teardown)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of the daemons under test are re-parented to this process, where teardown finds them."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@dataclass(frozen=True)
class Target:
    key: str  # column name in the table and JSON
    kind: str  # foundation | circus | supervisord
    settings: str  # what the table says about the configuration
    options: tuple[tuple[str, str], ...] = ()  # extra settings written into the config
    # How often the daemon looks at its children when it polls (0: event-driven). Restart kills land at a
    # random phase of this period, as real crashes do, instead of locking onto the daemon's timer.
    poll_period: float = 0.0

    def script(self) -> Path:
        return BIN / {"foundation": "foundationd", "circus": "circusd", "supervisord": "supervisord"}[self.kind]


TARGETS = [
    Target("foundation", "foundation", "defaults (one_for_one, no backoff)"),
    Target("circus", "circus", "defaults (check_delay=5)", poll_period=5.0),
    Target("circus-fast", "circus", "check_delay=0.01", (("check_delay", "0.01"),), poll_period=0.01),
    Target("supervisord", "supervisord", "defaults (startsecs=1, autorestart=unexpected)", poll_period=1.0),
    Target("supervisord-fast", "supervisord", "startsecs=0, autorestart=true",
           (("startsecs", "0"), ("autorestart", "true")), poll_period=1.0),
]


# ---- configuration files ----


def _foundation_config(tmp: Path, n: int, argv: list[str], restart_heavy: bool, agents: int) -> str:
    # Restart runs kill a child every few tens of ms: an intensity that can never be reached keeps the
    # root from giving up (circus and supervisord have no such limit by default).
    intensity, period = (100000, 1.0) if restart_heavy else (3, 5.0)
    if agents:
        lines = ["[supervisor]", 'strategy = "one_for_one"', f"intensity = {intensity}", f"period = {period}", ""]
        for i in range(agents):
            name = "counter" if agents == 1 else f"counter{i}"
            lines += ["[[supervisor.children]]", f'name = "{name}"', f'agent = "{COUNTER}"', ""]
        return "\n".join(lines)
    return workers_config(n, argv, intensity=intensity, period=period)


def _circus_config(tmp: Path, n: int, argv: list[str], options: dict[str, str]) -> str:
    circus = {
        "endpoint": f"ipc://{tmp}/circus-ctl.sock",
        "pubsub_endpoint": f"ipc://{tmp}/circus-pub.sock",
        "stats_endpoint": f"ipc://{tmp}/circus-stats.sock",
        **{k: v for k, v in options.items() if k == "check_delay"},
    }
    watcher = {"cmd": argv[0], "args": " ".join(argv[1:]), "numprocesses": str(n),
               **{k: v for k, v in options.items() if k != "check_delay"}}
    return _ini({"circus": circus, "watcher:sleep": watcher})


def _supervisord_config(tmp: Path, n: int, argv: list[str], options: dict[str, str]) -> str:
    return _ini({
        "unix_http_server": {"file": f"{tmp}/supervisor.sock"},
        "supervisord": {
            "nodaemon": "true",
            "logfile": f"{tmp}/supervisord.log",
            "pidfile": f"{tmp}/supervisord.pid",
            "childlogdir": str(tmp),
            # Not a speed setting: supervisord keeps 3 pipe ends per child and refuses to start below minfds.
            "minfds": str(max(1024, 4 * n + 256)),
        },
        "rpcinterface:supervisor": {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface",
        },
        "supervisorctl": {"serverurl": f"unix://{tmp}/supervisor.sock"},
        "program:sleep": {
            "command": " ".join(argv),
            "numprocs": str(n),
            "process_name": "%(program_name)s_%(process_num)d",
            **options,
        },
    })


def _ini(sections: dict[str, dict[str, str]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{key} = {value}" for key, value in values.items()]
        out.append("")
    return "\n".join(out)


# ---- a running daemon ----


class StatusClient:
    """One connection to a daemon's control interface; ``status()`` makes one request over it."""

    def __init__(self, request: Callable[[], Any], close: Callable[[], None], what: str, raw: Any = None) -> None:
        self.status, self.close, self.what = request, close, what
        self.raw = raw  # the underlying client (Foundation's ControlClient, for the other verbs)


class Run:
    def __init__(self, target: Target, tmp: Path, proc: subprocess.Popen[bytes], launched: float, n: int) -> None:
        self.target, self.tmp, self.proc, self.launched, self.n = target, tmp, proc, launched, n
        self.leftovers: list[str] = []  # what teardown had to kill (should stay empty)
        self._sleepers: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        path = self.tmp / "daemon.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.target.key} exited with {self.proc.returncode}: {self.log()}")

    # -- children, from /proc --

    def sleepers(self) -> set[int]:
        """Direct children of the daemon that have exec'd sleep (confirmed pids are not re-read)."""
        kids = child_pids(self.pid)
        self._sleepers &= kids
        for pid in kids - self._sleepers:
            if argv0(pid) == SLEEP or argv0(pid).endswith("/sleep"):
                self._sleepers.add(pid)
        return set(self._sleepers)

    def wait_sleepers(self, count: int, timeout: float = 120.0, poll: float = 0.001) -> tuple[float, float]:
        """Wait until ``count`` children run sleep; (first seen, all seen) in seconds since launch."""
        first = None
        deadline = time.perf_counter() + timeout
        checks = 0
        while True:
            now = time.perf_counter()
            found = len(self.sleepers())
            if found and first is None:
                first = now - self.launched
            if found >= count:
                return (first if first is not None else now - self.launched), now - self.launched
            checks += 1
            if checks % 100 == 0:
                self.check_alive()
            if now > deadline:
                raise TimeoutError(f"{self.target.key}: {found}/{count} children running after {timeout}s")
            time.sleep(poll)

    def stop_timed(self, poll: float = 0.001, timeout: float = 120.0) -> float:
        """SIGTERM the daemon; seconds until it has exited and none of its children is alive."""
        waiting = child_pids(self.pid)
        t0 = time.perf_counter()
        os.kill(self.pid, signal.SIGTERM)
        exited = False
        while True:
            if not exited:
                exited = self.proc.poll() is not None
            waiting = {pid for pid in waiting if _alive(pid)}
            now = time.perf_counter()
            if exited and not waiting:
                return now - t0
            if now - t0 > timeout:
                raise TimeoutError(f"{self.target.key}: not stopped after {timeout}s ({len(waiting)} children left)")
            time.sleep(poll)

    # -- control interface --

    def connect(self, timeout: float = 30.0) -> StatusClient:
        kind = self.target.kind
        if kind == "foundation":
            client = ControlClient(str(self.tmp / "run" / "control.sock"), timeout=timeout)
            return StatusClient(lambda: client.request("status"), client.close, "status (ControlClient, 1 conn)",
                                client)
        if kind == "circus":
            cc = CircusClient(endpoint=f"ipc://{self.tmp}/circus-ctl.sock", timeout=timeout)

            def circus_list() -> Any:
                reply = cc.call({"command": "list", "properties": {"name": "sleep"}})
                if reply.get("status") != "ok":
                    raise RuntimeError(f"circus list: {reply}")
                return reply

            return StatusClient(circus_list, cc.stop, "list sleep (CircusClient: the watcher's pids)")
        transport = SupervisorTransport(None, None, f"unix://{self.tmp}/supervisor.sock")
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
        return StatusClient(proxy.supervisor.getAllProcessInfo, transport.close,
                            "supervisor.getAllProcessInfo (XML-RPC, 1 conn)")

    def connect_when_ready(self, timeout: float = 30.0) -> StatusClient:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                client = self.connect()
                try:
                    client.status()
                except BaseException:
                    client.close()
                    raise
                return client
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X")


@contextlib.contextmanager
def launch(target: Target, n: int, argv: list[str] | None = None, *, restart_heavy: bool = False,
           agents: int = 0, config: str | None = None) -> Iterator[Run]:
    """Start ``target`` supervising ``n`` copies of ``argv`` (or ``agents`` counter agents, Foundation only; or,
    Foundation only, the whole ``config`` given)."""
    argv = argv or SLEEP_ARGV
    tmp = Path(tempfile.mkdtemp(prefix=f"fb-{target.key}-"))
    options = dict(target.options)
    env = dict(os.environ)
    if target.kind == "foundation":
        (tmp / "foundation.toml").write_text(config or _foundation_config(tmp, n, argv, restart_heavy, agents))
        env["FOUNDATION_RUNTIME_DIR"] = str(tmp / "run")  # also the marker teardown looks for
        cmd = [str(target.script()), "--runtime-dir", str(tmp / "run"), "--state-dir", str(tmp / "state"),
               "--config", str(tmp / "foundation.toml")]
    elif agents or config:
        raise ValueError("agents and a config of one's own are Foundation's only")
    elif target.kind == "circus":
        (tmp / "circus.ini").write_text(_circus_config(tmp, n, argv, options))
        cmd = [str(target.script()), str(tmp / "circus.ini")]
    else:
        (tmp / "supervisord.conf").write_text(_supervisord_config(tmp, n, argv, options))
        cmd = [str(target.script()), "-n", "-c", str(tmp / "supervisord.conf")]
    setpriv = shutil.which("setpriv")
    if setpriv:  # should the harness itself be SIGKILLed, the daemon still gets SIGTERM and stops its children
        cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
    proc = None
    run = None
    try:
        with open(tmp / "daemon.log", "wb") as log:
            launched = time.perf_counter()
            # Its own session: a Ctrl-C in the terminal reaches the harness only, which then stops it in order.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=tmp, start_new_session=True)
        run = Run(target, tmp, proc, launched, n)
        yield run
    finally:
        with _signals_held():
            left = teardown(proc, marker=str(tmp / "run") if target.kind == "foundation" else None)
            if run is not None:
                run.leftovers = left
            if left:
                print(f"bench: {target.key}: teardown killed leftovers: {left}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM must not cut a teardown short."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def teardown(proc: subprocess.Popen[bytes] | None, marker: str | None = None) -> list[str]:
    """SIGTERM, wait, SIGKILL, wait; then kill and reap whatever the daemon left. Returns what was left."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left: list[str] = []
    deadline = time.monotonic() + 10
    while True:
        stray = [p for p in psutil.Process().children(recursive=True) if p.pid != getattr(proc, "pid", None)]
        if marker is not None:
            stray += [p for p in _with_marker(marker) if p not in stray]
        live = []
        for p in stray:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(p.pid, os.WNOHANG)
                    continue
                left.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
                p.kill()
                live.append(p)
            except psutil.Error:
                continue
        for p in live:
            with contextlib.suppress(ChildProcessError, psutil.Error):
                if p.ppid() == os.getpid():
                    os.waitpid(p.pid, 0)
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return sorted(set(left))


def _with_marker(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FOUNDATION_RUNTIME_DIR") == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe_settings() -> list[dict[str, Any]]:
    return [{"key": t.key, "kind": t.kind, "settings": t.settings, "options": dict(t.options),
             "poll_period_s": t.poll_period} for t in TARGETS]


if __name__ == "__main__":  # print the configs the harness writes, for the docs
    for t in TARGETS:
        print(f"# {t.key}: {t.settings}")
        d = Path("/tmp/EXAMPLE")
        if t.kind == "foundation":
            print(_foundation_config(d, 2, SLEEP_ARGV, False, 0))
        elif t.kind == "circus":
            print(_circus_config(d, 2, SLEEP_ARGV, dict(t.options)))
        else:
            print(_supervisord_config(d, 2, SLEEP_ARGV, dict(t.options)))
    print(json.dumps(describe_settings(), indent=2))
