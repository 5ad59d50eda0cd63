"""The peers of Foundation's durable workflows, measured on this machine: DBOS Transact on PostgreSQL, and Restate.

    .venv/bin/python bench/workflow_peers.py [--only dbos,restate] [--runs 200] [--warmup 20] [--concurrent 1000]
    make bench-workflow-peers BENCH_ARGS='--runs 200'

The same workflow on each: one of 1 and one of 3 no-op steps, each step journaled by the engine (DBOS:
``@DBOS.step()``, output committed to PostgreSQL; Restate: ``ctx.run``, entry appended to its log) before the
next. Per peer, after ``warmup`` runs of each shape, ``runs`` of each, interleaved, one at a time:

  step_p50_ms / step_p99_ms    a 1-step workflow, start to result (the cost of a workflow with one step)
  wf3_p50_ms / wf3_p99_ms      the 3-step workflow, start to result
  per_step_ms                  (wf3 p50 - step p50) / 2: what one more step adds
  concurrent_1000_s            1,000 3-step workflows started without waiting, then every result awaited:
                               first start to last result, in s (with another --concurrent N: ``concurrent_s``
                               and ``concurrent_n`` are always there; ``concurrent_per_s`` = workflows per second;
                               ``concurrent_started_s``: when the last one had been started)
  also                         step_mean_ms, wf3_mean_ms, wf3_min_ms, wf3_max_ms, runs, versions, settings
                               (durability, read back), contention (load before and after), samples (ms)

"Start to result" is what an application sees: DBOS ``start_workflow(wf).get_result()`` in the application's
process; Restate, an HTTP request to its ingress (``POST /Bench/wf3``) that answers with the result. For the
concurrent case, DBOS: ``start_workflow`` 1,000 times from one thread, then ``get_result`` on each handle;
Restate: 1,000 ``POST /Bench/wf3/send`` (durably accepted, answered with an invocation id) over aiohttp's pool of
100 connections, then ``GET /restate/invocation/ID/attach`` for each.

Everything runs from temporary directories and is removed afterwards; every process started is stopped and
checked gone (its session scanned), also on Ctrl-C or SIGTERM; each has a parent-death signal, so none outlives
a SIGKILLed harness. Durability is each peer's default: PostgreSQL with fsync and synchronous_commit on (the
values are read back and reported), Restate's defaults (RocksDB WAL fsync on; the values are read back from
``restate-server --dump-config``). The only settings changed are addresses (free loopback ports), and Restate's
telemetry off (DO_NOT_TRACK). restate-server also asks GitHub for its latest release at start, which no setting
turns off; without access to GitHub it logs one ERROR (octocrab) and carries on. A SIGKILLed harness leaves its
temporary directory (foundation-peers-*) behind; nothing else.

What the harness installs when missing: the Python packages of pyproject's ``bench`` extra into the venv it
runs in (pip); PostgreSQL (``apt-get install -y postgresql``, as root); the Restate server into
bench/peers/restate/node_modules (``npm install``, version pinned in bench/peers/restate/package.json; npm itself
from apt as root when absent). PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres``
user (created by Debian's package; else a ``foundation-bench`` system user is created).

For bench/workflows.py: ``measure_dbos(runs)`` and ``measure_restate(runs)`` return a dict (keys above); both
raise ``PeerUnavailable`` with the reason when a peer cannot run here.
``print_table({"dbos": ..., "restate": ..., "foundation": ...})`` prints them side by side. Call them from the
main thread: the servers' parent-death signal follows the thread that started them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import glob
import http.client
import importlib
import importlib.util
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
RESTATE_NPM_DIR = PEERS / "restate"
if str(REPO) not in sys.path:  # run as `python bench/workflow_peers.py`
    sys.path.insert(0, str(REPO))

from bench.common import contention, machine, percentile  # noqa: E402

# import module -> distribution name in pyproject's `bench` extra
PEER_MODULES = {
    "dbos": {"dbos": "dbos"},
    "restate": {"restate": "restate-sdk", "hypercorn": "hypercorn", "aiohttp": "aiohttp"},
}
# (key, label) of the table's rows, in order; bench/workflows.py may reuse them for Foundation's column
TABLE_ROWS = [
    ("step_p50_ms", "1-step workflow p50 (ms)"),
    ("step_p99_ms", "1-step workflow p99 (ms)"),
    ("wf3_p50_ms", "3-step workflow p50 (ms)"),
    ("wf3_p99_ms", "3-step workflow p99 (ms)"),
    ("wf3_mean_ms", "3-step workflow mean (ms)"),
    ("per_step_ms", "one more step, p50 (ms)"),
    ("concurrent_n", "concurrent: workflows"),
    ("concurrent_s", "concurrent: first start to last result (s)"),
    ("concurrent_per_s", "concurrent: workflows/s"),
]
# a result that has only the brief's key for the concurrent wall time
_FALLBACK = {"concurrent_s": "concurrent_1000_s"}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class PeerUnavailable(RuntimeError):
    """This peer cannot be run on this machine; the message says why and what would fix it."""


# ---- processes we start, and only those ----

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # preexec_fn: runs in the child after the uid change, so it is kept
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class Services:
    """Processes started in sessions of their own, stopped in reverse order and checked gone."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes], signal.Signals]] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              user: str | None = None, stop_signal: signal.Signals = signal.SIGTERM) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.out", "wb")  # noqa: SIM115 - the child keeps it
        err = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                user=user, group=_primary_group(user) if user else None, extra_groups=[] if user else None,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - a single ctypes call, no locks
            )
        finally:
            out.close()
            err.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def log_tail(self, name: str, lines: int = 25) -> str:
        text = ""
        for suffix in (".log", ".out"):
            with contextlib.suppress(OSError):
                text += (self.workdir / f"{name}{suffix}").read_text(errors="replace")
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return "\n".join(text.splitlines()[-lines:])

    def alive(self, name: str) -> None:
        for pname, proc, _ in self.procs:
            if pname == name and proc.poll() is not None:
                raise PeerUnavailable(f"{name} exited with status {proc.returncode}:\n{self.log_tail(name)}")

    def stop_all(self) -> list[str]:
        """Stop everything (stop signal, then SIGKILL); returns what had to be killed or is still there."""
        problems = []
        while self.procs:
            name, proc, sig = self.procs.pop()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    problems.append(f"{name} ignored {sig.name} for {STOP_TIMEOUT:.0f} s: SIGKILLed")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            deadline = time.monotonic() + 10
            while rest := _session_members(proc.pid):
                if time.monotonic() > deadline:
                    problems.append(f"{name}: processes {rest} of its session would not die")
                    break
                for pid in rest:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
        return problems


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    members.append(int(entry))
    return members


def _primary_group(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


@contextlib.contextmanager
def _sandbox(prefix: str, tmp_root: str | None) -> Iterator[Services]:
    """A temporary directory and the processes started in it; both gone however we leave."""
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    services = Services(workdir)
    try:
        yield services
    finally:
        old_int = None
        if threading.current_thread() is threading.main_thread():
            # a second Ctrl-C or SIGTERM must not cut this short
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for problem in services.stop_all():
                print(f"workflow_peers: teardown: {problem}", file=sys.stderr)
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _load() -> dict[str, Any]:
    """bench.common's contention (load averages, CPU pressure), plus I/O pressure: both slow these peers."""
    out = contention()
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/pressure/io") as f:
        out["io_pressure_some_avg10"] = float(f.readline().split()[1].split("=")[1])
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(check: Callable[[], bool], what: str, services: Services, name: str,
                timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        services.alive(name)
        if check():
            return
        if time.monotonic() > deadline:
            raise PeerUnavailable(f"{name}: {what} not within {timeout:.0f} s:\n{services.log_tail(name)}")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- installing what is missing ----


def _is_root() -> bool:
    return os.geteuid() == 0


def ensure_python_packages(peer: str) -> None:
    """pip-install the peer's packages from pyproject's `bench` extra into this venv when they are missing."""
    wanted = PEER_MODULES[peer]
    missing = [dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    if sys.prefix == sys.base_prefix:
        raise PeerUnavailable(f"{peer}: Python packages {missing} are missing and this Python is not a virtual "
                              "environment; run with the project's venv (.venv/bin/python bench/workflow_peers.py, "
                              "or make bench-workflow-peers)")
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    reqs = []
    for dist in missing:
        found = [r for r in extra if re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") == dist]
        reqs += found or [dist]
    print(f"workflow_peers: pip install {' '.join(reqs)}", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *reqs], check=False)
    importlib.invalidate_caches()
    if done.returncode != 0 or any(importlib.util.find_spec(m) is None for m in wanted):
        raise PeerUnavailable(f"{peer}: pip install {' '.join(reqs)} failed (status {done.returncode})")


def _apt_install(*packages: str) -> bool:
    if not _is_root() or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"workflow_peers: apt-get install -y {' '.join(packages)}", file=sys.stderr)
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(argv, env=env, check=False).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], env=env, check=False)
    return subprocess.run(argv, env=env, check=False).returncode == 0


def postgres_bindir() -> Path:
    """The newest PostgreSQL server on this machine, installed from Debian's packages when there is none."""
    for attempt in range(2):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                       key=lambda p: int(re.sub(r"\D", "", Path(p).parent.parent.name) or 0))
        if found:
            return Path(found[-1]).parent
        pg_config = shutil.which("pg_config")
        if pg_config:
            bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                         check=False).stdout.strip())
            if (bindir / "postgres").exists():
                return bindir
        if shutil.which("postgres") and shutil.which("initdb"):
            return Path(shutil.which("postgres") or "").resolve().parent
        if attempt == 0 and not _apt_install("postgresql"):
            break
    raise PeerUnavailable("dbos: no PostgreSQL server here (no /usr/lib/postgresql/*/bin/postgres) and it could "
                          "not be installed: `apt-get install -y postgresql` needs root and Debian's packages")


def _postgres_user() -> str | None:
    """Who runs the cluster: ourselves unless root (PostgreSQL refuses root), then `postgres` (or one we make)."""
    if not _is_root():
        return None
    for name in ("postgres", "foundation-bench"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                           "foundation-bench"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PeerUnavailable(f"dbos: PostgreSQL cannot run as root and no user could be made for it: "
                              f"{done.stderr.strip()}")
    return "foundation-bench"


def restate_server_binary() -> Path:
    """restate-server from the npm package, installed into bench/peers/restate/node_modules when absent."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    osname = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    if arch is None or osname is None:
        raise PeerUnavailable(f"restate: the npm package ships no server for {sys.platform}/{platform.machine()}")
    binary = RESTATE_NPM_DIR / "node_modules" / "@restatedev" / f"restate-server-{osname}-{arch}" / "bin" / \
        "restate-server"
    wanted = json.loads((RESTATE_NPM_DIR / "package.json").read_text())["dependencies"]["@restatedev/restate-server"]
    installed = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        installed = json.loads((binary.parent.parent / "package.json").read_text())["version"]
    if binary.exists() and installed == wanted:
        return binary
    npm = shutil.which("npm")
    if npm is None and _apt_install("npm"):
        npm = shutil.which("npm")
    if npm is None:
        raise PeerUnavailable("restate: npm is not installed (as root this script runs `apt-get install -y npm`)")
    print(f"workflow_peers: npm install @restatedev/restate-server@{wanted} in {RESTATE_NPM_DIR}", file=sys.stderr)
    # No lock file (it would name the registry's host); no install scripts (only an analytics ping has one).
    done = subprocess.run([npm, "install", "--no-package-lock", "--no-audit", "--no-fund", "--ignore-scripts"],
                          cwd=RESTATE_NPM_DIR, env={**os.environ, "SCARF_ANALYTICS": "false"},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not binary.exists():
        raise PeerUnavailable(f"restate: npm install failed (status {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return binary


# ---- statistics ----


_percentile = percentile  # (bench/common.py's)


def summarize(wf1_s: list[float], wf3_s: list[float], concurrent_n: int, concurrent_s: float) -> dict[str, Any]:
    wf1 = [s * 1000 for s in wf1_s]
    wf3 = [s * 1000 for s in wf3_s]
    out: dict[str, Any] = {
        "runs": len(wf3),
        "step_p50_ms": round(_percentile(wf1, 50), 3),
        "step_p99_ms": round(_percentile(wf1, 99), 3),
        "step_mean_ms": round(sum(wf1) / len(wf1), 3),
        "wf3_p50_ms": round(_percentile(wf3, 50), 3),
        "wf3_p99_ms": round(_percentile(wf3, 99), 3),
        "wf3_mean_ms": round(sum(wf3) / len(wf3), 3),
        "wf3_min_ms": round(min(wf3), 3),
        "wf3_max_ms": round(max(wf3), 3),
        "per_step_ms": round((_percentile(wf3, 50) - _percentile(wf1, 50)) / 2, 3),
        "concurrent_n": concurrent_n,
        "concurrent_s": round(concurrent_s, 3),
        "concurrent_per_s": round(concurrent_n / concurrent_s, 1),
        "samples": {"step_ms": [round(x, 4) for x in wf1], "wf3_ms": [round(x, 4) for x in wf3]},
    }
    if concurrent_n == 1000:
        out["concurrent_1000_s"] = out["concurrent_s"]
    return out


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---- DBOS Transact on PostgreSQL ----


def measure_dbos(runs: int = 200, *, warmup: int = 20, concurrent: int = 1000,
                 tmp_root: str | None = None) -> dict[str, Any]:
    """DBOS Transact on a throwaway local PostgreSQL cluster (fsync on); see the module's docstring."""
    ensure_python_packages("dbos")
    bindir = postgres_bindir()
    user = _postgres_user()
    load_before = _load()
    with _sandbox("foundation-peers-dbos-", tmp_root) as services:
        work = services.workdir
        data = work / "pgdata"
        if user:
            os.chown(work, pwd.getpwnam(user).pw_uid, _primary_group(user))
        work.chmod(0o700)
        # --no-sync: initdb's own final flush of the new directory only; the server below runs with fsync on.
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            user=user, group=_primary_group(user) if user else None, extra_groups=[] if user else None,
            cwd=work, capture_output=True, text=True, check=False)
        if init.returncode != 0:
            raise PeerUnavailable(f"dbos: initdb failed: {(init.stderr or init.stdout).strip()[-2000:]}")
        port = free_port()
        services.start("postgres", [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(work),
                                    "-c", "listen_addresses=127.0.0.1"],
                       cwd=work, user=user, stop_signal=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        isready = bindir / "pg_isready"

        def ready() -> bool:
            return subprocess.run([str(isready), "-q", "-h", "127.0.0.1", "-p", str(port)],
                                  check=False).returncode == 0

        _wait_until(ready, "accepting connections", services, "postgres")
        url = f"postgresql://postgres@127.0.0.1:{port}/dbos_bench"
        app = services.start("dbos-app", [sys.executable, str(PEERS / "dbos_app.py"), "--url", url,
                                          "--runs", str(runs), "--warmup", str(warmup),
                                          "--concurrent", str(concurrent)],
                             cwd=work, stop_signal=signal.SIGTERM)
        try:
            app.wait(timeout=max(600.0, runs * 2.0 + concurrent * 0.5))
        except subprocess.TimeoutExpired as exc:
            raise PeerUnavailable(f"dbos: the measuring process did not finish:\n{services.log_tail('dbos-app')}") \
                from exc
        if app.returncode != 0:
            raise PeerUnavailable(f"dbos: the measuring process failed (status {app.returncode}):\n"
                                  f"{services.log_tail('dbos-app')}")
        raw = json.loads((work / "dbos-app.out").read_text().strip().splitlines()[-1])
    result = summarize(raw["wf1_s"], raw["wf3_s"], raw["concurrent_n"], raw["concurrent_s"])
    result["concurrent_started_s"] = round(raw["concurrent_started_s"], 3)
    result["versions"] = {"dbos": raw["dbos_version"], "postgresql": raw["postgres"]["server_version"]}
    result["settings"] = {k: v for k, v in raw["postgres"].items() if k != "server_version"}
    result["settings"]["cluster_user"] = user or pwd.getpwuid(os.geteuid()).pw_name
    result["contention"] = {"before": load_before, "after": _load()}
    return result


# ---- Restate ----


def _http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _restate_settings(binary: Path, env: dict[str, str]) -> dict[str, Any]:
    dumped = subprocess.run([str(binary), "--dump-config"], env=env, capture_output=True, text=True, check=False)
    try:
        conf = tomllib.loads(dumped.stdout)
    except tomllib.TOMLDecodeError:
        return {}
    pick = {
        "bifrost.default-provider": ("bifrost", "default-provider"),
        "log-server.rocksdb-disable-wal-fsync": ("log-server", "rocksdb-disable-wal-fsync"),
        "bifrost.local.rocksdb-disable-wal": ("bifrost", "local", "rocksdb-disable-wal"),
        "bifrost.local.rocksdb-disable-wal-fsync": ("bifrost", "local", "rocksdb-disable-wal-fsync"),
        "default-num-partitions": ("default-num-partitions",),
        "disable-telemetry": ("disable-telemetry",),
    }
    out: dict[str, Any] = {}
    for label, keys in pick.items():
        node: Any = conf
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        out[label] = node
    return out


def measure_restate(runs: int = 200, *, warmup: int = 20, concurrent: int = 1000,
                    tmp_root: str | None = None) -> dict[str, Any]:
    """restate-server (npm) and a restate-sdk service under hypercorn, over the HTTP ingress; see the docstring."""
    ensure_python_packages("restate")
    binary = restate_server_binary()
    load_before = _load()
    with _sandbox("foundation-peers-restate-", tmp_root) as services:
        ingress_port, settings = _start_restate(services, binary)
        wf1_s, wf3_s = _restate_sequential(ingress_port, runs, warmup)
        started_s, concurrent_s = asyncio.run(_restate_concurrent(ingress_port, concurrent))
        for name in ("restate-server", "hypercorn"):
            services.alive(name)
    server_version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                                    check=False).stdout.strip()
    result = summarize(wf1_s, wf3_s, concurrent, concurrent_s)
    result["concurrent_started_s"] = round(started_s, 3)
    result["versions"] = {"restate-server": server_version.removeprefix("restate-server ").strip(),
                          "restate-sdk": _dist_version("restate-sdk"), "hypercorn": _dist_version("hypercorn")}
    result["settings"] = settings
    result["contention"] = {"before": load_before, "after": _load()}
    return result


def _start_restate(services: Services, binary: Path) -> tuple[int, dict[str, Any]]:
    """The server, the service under hypercorn, registered and invocable: (ingress port, durability settings)."""
    node_port, admin_port, ingress_port, svc_port = (free_port() for _ in range(4))
    env = {
        **os.environ,
        "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node_port}",
        "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{node_port}",
        "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin_port}",
        "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress_port}",
        "RESTATE_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
    }
    settings = _restate_settings(binary, env)
    services.start("restate-server", [str(binary), "--base-dir", str(services.workdir / "restate-data"),
                                      "--no-logo", "--listen-mode", "tcp"], env=env, cwd=services.workdir)

    def healthy() -> bool:
        try:
            return (_http(admin_port, "GET", "/health", timeout=1)[0] == 200
                    and _http(ingress_port, "GET", "/restate/health", timeout=1)[0] == 200)
        except OSError:
            return False

    _wait_until(healthy, "admin and ingress healthy", services, "restate-server")
    services.start("hypercorn", [sys.executable, "-m", "hypercorn", "restate_app:app", "--bind",
                                 f"127.0.0.1:{svc_port}", "--log-level", "WARNING"],
                   env={**os.environ, "PYTHONPATH": str(PEERS)}, cwd=PEERS)
    _wait_until(lambda: _port_open(svc_port), "listening", services, "hypercorn")
    status, body = _http(admin_port, "POST", "/deployments",
                         json.dumps({"uri": f"http://127.0.0.1:{svc_port}"}).encode(), timeout=30)
    if status not in (200, 201):
        raise PeerUnavailable(f"restate: registering the service failed: HTTP {status} {body[:500]!r}")

    last: list[object] = []

    def invocable() -> bool:
        try:
            answer = _http(ingress_port, "POST", "/Bench/wf1", timeout=10)
        except OSError as exc:
            answer = (0, str(exc).encode())
        last[:] = [answer]
        return answer[0] == 200

    try:
        _wait_until(invocable, "the registered service invocable", services, "restate-server")
    except PeerUnavailable as exc:
        raise PeerUnavailable(f"{exc}\nlast answer: {last}\nhypercorn: {services.log_tail('hypercorn')}") \
            from None
    return ingress_port, settings


def _restate_sequential(port: int, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """One request at a time on one kept-alive connection: POST /Bench/wf1 and /Bench/wf3, interleaved."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def one(path: str) -> float:
        t0 = time.perf_counter()
        conn.request("POST", path, body=b"")  # the handlers take no input: no content-type
        resp = conn.getresponse()
        answer = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200 or answer != b'"ok"':
            raise PeerUnavailable(f"restate: {path} answered HTTP {resp.status} {answer[:300]!r}")
        return elapsed

    try:
        for _ in range(warmup):
            one("/Bench/wf1")
            one("/Bench/wf3")
        wf1_s: list[float] = []
        wf3_s: list[float] = []
        for _ in range(runs):  # interleaved, as for DBOS
            wf1_s.append(one("/Bench/wf1"))
            wf3_s.append(one("/Bench/wf3"))
    finally:
        conn.close()
    return wf1_s, wf3_s


async def _restate_concurrent(port: int, count: int) -> tuple[float, float]:
    import aiohttp  # noqa: PLC0415 - installed on first use, by ensure_python_packages

    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100),
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def send() -> str:
            async with session.post(f"{base}/Bench/wf3/send", skip_auto_headers=("Content-Type",)) as resp:
                answer = await resp.read()
                if resp.status not in (200, 202):
                    raise PeerUnavailable(f"restate: /send answered HTTP {resp.status} {answer[:300]!r}")
                return str(json.loads(answer)["invocationId"])

        async def attach(invocation: str) -> None:
            async with session.get(f"{base}/restate/invocation/{invocation}/attach") as resp:
                answer = await resp.read()
                if resp.status != 200 or answer != b'"ok"':
                    raise PeerUnavailable(f"restate: attach answered HTTP {resp.status} {answer[:300]!r}")

        t0 = time.perf_counter()
        ids = await asyncio.gather(*(send() for _ in range(count)))
        started = time.perf_counter() - t0
        await asyncio.gather(*(attach(i) for i in ids))
        return started, time.perf_counter() - t0


# ---- output ----

MEASURES: dict[str, Callable[..., dict[str, Any]]] = {"dbos": measure_dbos, "restate": measure_restate}


def print_table(results: dict[str, dict[str, Any] | str]) -> None:
    """One column per target (a result dict, or a string: why it did not run), one row per TABLE_ROWS entry."""
    names = list(results)
    rows = [["", *names]]
    for key, label in TABLE_ROWS:
        row = [label]
        for name in names:
            res = results[name]
            value = res.get(key, res.get(_FALLBACK.get(key, ""))) if isinstance(res, dict) else None
            if key == "concurrent_n" and value is None and isinstance(res, dict) and "concurrent_1000_s" in res:
                value = 1000
            row.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) and value < 100
                       else f"{value:.1f}" if isinstance(value, float) else str(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                           strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for name in names:
        res = results[name]
        if isinstance(res, str):
            print(f"{name}: not measured: {res}")
        else:
            print(f"{name}: {res.get('runs')} runs; versions {res.get('versions')}; durability {res.get('settings')}; "
                  f"load {res.get('contention')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="dbos,restate", help="comma-separated: dbos,restate")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--tmp-root", default=None, help="where the temporary directories go (default: $TMPDIR)")
    parser.add_argument("--json", default=str(HERE / "results" / "workflow_peers.json"),
                        help="where to write every sample and setting")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in MEASURES]
    if unknown:
        parser.error(f"unknown peers {unknown}; choose among {sorted(MEASURES)}")

    results: dict[str, dict[str, Any] | str] = {}
    for peer in chosen:
        print(f"workflow_peers: measuring {peer} ...", file=sys.stderr, flush=True)
        try:
            results[peer] = MEASURES[peer](args.runs, warmup=args.warmup, concurrent=args.concurrent,
                                           tmp_root=args.tmp_root)
        except PeerUnavailable as exc:
            results[peer] = str(exc)
            print(f"workflow_peers: {peer} not measured: {exc}", file=sys.stderr)

    print_table(results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "contention": _load(), "runs": args.runs,
                               "warmup": args.warmup, "results": results}, indent=2) + "\n")
    print(f"samples and settings: {out}")
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
