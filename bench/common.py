"""Shared helpers for the benchmark scripts: a daemon that always goes away, /proc readers, stats, output.

The scripts measure; they assert nothing. Every script runs its daemon through ``running_daemon`` so
that Ctrl-C, SIGTERM or an exception still stops it and checks that no process it started is left.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py`: make the project importable without an install
    sys.path.insert(0, str(REPO))

from agents.testing import DaemonProcess, WaitTimeout, wait_for  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"


# ---- the daemon under test ----


def workers_config(count: int, command: list[str], intensity: int = 3, period: float = 5.0,
                   prefix: str = "w") -> str:
    """A one_for_one root supervisor with ``count`` identical permanent workers named prefix0..N-1."""
    lines = ["[supervisor]", 'strategy = "one_for_one"', f"intensity = {intensity}", f"period = {period}", ""]
    argv = ", ".join(json.dumps(arg) for arg in command)
    for i in range(count):
        lines += ["[[supervisor.children]]", f'name = "{prefix}{i}"', f"command = [{argv}]", ""]
    return "\n".join(lines)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def running_daemon(config: str) -> Iterator[DaemonProcess]:
    """A foundationd in a temporary directory, stopped (SIGTERM, wait, leftover check) however we leave."""
    old_term = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="foundation-bench-") as tmp:
            daemon = DaemonProcess(Path(tmp), config, name="bench")
            try:
                daemon.start()
                yield daemon
            finally:
                _teardown(daemon)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _teardown(daemon: DaemonProcess) -> None:
    # A second Ctrl-C must not cut the teardown short (the daemon, in our process group, gets it too).
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        daemon.stop()
    except AssertionError as exc:
        print(f"bench: teardown problem: {exc}", file=sys.stderr)
        for proc in daemon.leftovers():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        wait_for(lambda: not daemon.leftovers(), timeout=10, what="leftovers killed")
        raise
    finally:
        signal.signal(signal.SIGINT, old_int)


def daemon_pid(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


def worker_names(daemon: DaemonProcess) -> list[str]:
    return [child["name"] for child in daemon.status()["tree"]["children"]]


class DaemonExited(Exception):
    """The daemon under test went away while the benchmark still needed it."""


def wait_all_exec(daemon: DaemonProcess, program: str, count: int, timeout: float = 60) -> dict[str, int]:
    """Wait until ``count`` top-level workers run and each has exec'd ``program``; return name -> pid."""

    def check() -> dict[str, int] | None:
        if daemon.proc is not None and daemon.proc.poll() is not None:
            # wait_for takes exceptions for "not yet": end the wait from outside it instead.
            raise DaemonExited(f"foundationd exited with {daemon.proc.returncode}: {daemon.log()[-2000:]}")
        children = daemon.status()["tree"]["children"]
        pids = {c["name"]: c.get("pid") for c in children if c["state"] == "running" and c.get("pid")}
        if len(pids) < count:
            return None
        if all(argv0(pid).endswith(program) for pid in pids.values()):
            return pids
        return None

    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_for(check, timeout=min(1.0, max(0.0, deadline - time.monotonic())), interval=0.05,
                            what=f"{count} workers running {program}")
        except WaitTimeout as exc:
            if isinstance(exc.__cause__, DaemonExited):
                raise exc.__cause__ from None
            if time.monotonic() >= deadline:
                raise


# ---- /proc readers (cheap enough to poll every millisecond) ----


def child_pids(pid: int) -> set[int]:
    """Direct children of ``pid``, from /proc/PID/task/*/children (all threads: any of them may fork)."""
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.update(int(p) for p in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def argv0(pid: int) -> str:
    """The first word of a process's command line ('' if gone, a zombie, or not readable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def context_switches(pid: int) -> dict[int, tuple[int, int]]:
    """tid -> (voluntary, nonvoluntary) context switches, for every thread of ``pid``."""
    result: dict[int, tuple[int, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        values = {}
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        key, value = line.split(":")
                        values[key] = int(value)
        except (FileNotFoundError, ProcessLookupError):
            continue
        result[int(tid)] = (values["voluntary_ctxt_switches"], values["nonvoluntary_ctxt_switches"])
    return result


# ---- numbers and output ----


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "min_ms": round(min(ms), 3),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "max_ms": round(max(ms), 3),
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (then the numbers are of that)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "daemon", "ipc"))}


def contention() -> dict[str, Any]:
    """How busy the machine was (other work skews latency): load averages and CPU pressure (PSI avg10)."""
    psi = None
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/pressure/cpu") as f:
        psi = float(f.readline().split()[1].split("=")[1])
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpu_pressure_some_avg10": psi}


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_results(name: str, data: dict[str, Any], path: str | None = None) -> Path:
    out = Path(path) if path else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out
