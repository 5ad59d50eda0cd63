"""``doctor``: the production-readiness checklist against the live daemon (DESIGN 3.9), one verdict a check.

    request ──> sample 1 (/proc: the daemon's descendants; the broker's depths)
            ──> probe child (probe.py: a durable LMDB commit, stale readers), and ``window`` seconds on the loop
            ──> sample 2 ──> checks (pure) ──> reply

Nothing here blocks the loop: the slow part (a disk commit) runs in a child whose output is read when the loop
says it is readable; the two samples are /proc reads. A check that needs a trend (zombies that stay, an outbox
that grows) compares the two samples. ``checks`` is pure: facts in, verdicts out, tested without a daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.core.states import State
from daemon.core.tree import Supervisor, Worker
from daemon.services.metrics import walk
from daemon.shell import procfs

log = logging.getLogger("foundationd")

WINDOW = 0.5  # seconds between the two samples
PROBE_BUDGET = 1.0  # a durable commit slower than this fails the check
PROBE_TIMEOUT = 10.0  # a probe still running after this is killed, and the check fails


@dataclass
class Sample:
    """What the daemon looks like at one instant."""

    strays: dict[int, str] = field(default_factory=dict)  # descendants outside every child's process group
    zombies: dict[int, str] = field(default_factory=dict)  # pid -> "comm (under NAME)"
    depth: int = 0  # messages queued or in flight
    calls: int = 0
    monitors: int = 0


@dataclass
class Facts:
    """Everything the checks decide on (plain data)."""

    first: Sample
    second: Sample
    probe: dict[str, Any]
    root_state: str
    parked: list[str]
    headroom: list[tuple[str, int, int]]  # (supervisor, restarts within its period, intensity)
    under_systemd: bool
    watchdog: float | None
    spawn_path: str
    guardian_pid: int | None


Check = dict[str, Any]  # {"name", "ok", "detail"}


def checks(f: Facts) -> list[Check]:
    out: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        out.append({"name": name, "ok": ok, "detail": detail})

    check("tree", f.root_state == "running" and not f.parked,
          f"root {f.root_state}" + (f"; parked: {', '.join(f.parked)}" if f.parked else ""))
    strays = [text for pid, text in f.second.strays.items() if pid in f.first.strays]  # still there after the window
    check("process groups", not strays, "every descendant is in a child's process group" if not strays else
          f"{len(strays)} outside every child's group (escaped with setsid? not stopped with it): "
          + ", ".join(strays[:5]))
    zombies = [text for pid, text in f.second.zombies.items() if pid in f.first.zombies]
    check("zombies", not zombies, "none" if not zombies else f"{len(zombies)} not reaped: " + ", ".join(zombies[:5]))
    growing = [f"{what} {a} -> {b}" for what, a, b in (
        ("outbox", f.first.depth, f.second.depth), ("pending calls", f.first.calls, f.second.calls),
        ("monitors", f.first.monitors, f.second.monitors)) if b > a]
    second = f.second
    check("broker", not growing, f"not growing (outbox {second.depth}, pending calls {second.calls}, monitors "
          f"{second.monitors})" if not growing else "growing: " + ", ".join(growing))
    if "commit_s" in f.probe:
        seconds = f.probe["commit_s"]
        check("probe commit", seconds <= PROBE_BUDGET, f"durable LMDB commit in {seconds * 1000:.1f} ms (budget "
              f"{PROBE_BUDGET * 1000:.0f} ms)")
    else:
        check("probe commit", False, str(f.probe.get("commit_error") or f.probe.get("error") or "no answer"))
    stale = f.probe.get("stale_readers")
    if isinstance(stale, dict):
        check("stale readers", not stale, "none in the state directory's LMDB environments" if not stale else
              "; ".join(f"{env}: pid {', '.join(map(str, pids))}" for env, pids in sorted(stale.items())))
    else:
        check("stale readers", False, "the probe did not say")
    tight = sorted(f.headroom, key=lambda h: h[2] - h[1])
    if tight:
        name, used, allowed = tight[0]
        check("intensity headroom", used < allowed, f"{name}: {used} of {allowed} restarts used in its period"
              + ("" if used < allowed else "; one more restart and it fails"))
    if f.under_systemd:
        check("systemd watchdog", f.watchdog is not None, f"pinging every {f.watchdog:g}s" if f.watchdog else
              "under systemd without WatchdogSec= (a hung daemon would not be restarted)")
    else:
        check("systemd watchdog", True, "not under systemd")
    check("exec helper", f.spawn_path == "foundation-exec", f"spawning through {f.spawn_path}" + (
        "" if f.spawn_path == "foundation-exec" else " (no parent-death signal before exec; reinstall with a C "
        "compiler)"))
    check("guardian", f.guardian_pid is not None, f"pid {f.guardian_pid}" if f.guardian_pid else "not running")
    return out


class Doctor:
    def __init__(self, app: Any) -> None:
        self._app = app

    def run(self, window: float, done: Callable[[dict[str, Any]], Any]) -> None:
        app = self._app
        state: dict[str, Any] = {"probe": None, "waited": False, "finished": False}
        proc = self._start_probe()
        first = self.sample({proc.pid} if proc is not None else set())

        def finish() -> None:
            if state["finished"] or state["probe"] is None or not state["waited"]:
                return
            state["finished"] = True
            facts = self._facts(first, self.sample(set()), state["probe"])
            results = checks(facts)
            done({"ok": all(c["ok"] for c in results), "checks": results})

        def waited() -> None:
            state["waited"] = True
            finish()

        def probed(result: dict[str, Any]) -> None:
            state["probe"] = result
            finish()

        app.loop.call_later(window, waited)
        if proc is None:
            probed({"error": "could not start the probe"})
        else:
            self._read_probe(proc, probed)

    def _start_probe(self) -> subprocess.Popen[bytes] | None:
        try:
            return subprocess.Popen([sys.executable, "-m", "daemon.services.probe", str(self._app.state_dir)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    process_group=0, close_fds=True)
        except OSError as exc:
            log.warning("doctor: cannot start the probe: %s", exc)
            return None

    def _read_probe(self, proc: subprocess.Popen[bytes], probed: Callable[[dict[str, Any]], None]) -> None:
        loop = self._app.loop
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        chunks: list[bytes] = []

        def end(result: dict[str, Any]) -> None:
            timer.cancel()
            loop.remove_reader(fd)
            proc.stdout.close()  # type: ignore[union-attr]
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:  # (reaped by the shell's SIGCHLD handler, or now)
                    proc.kill()
                    proc.wait()
            probed(result)

        def readable() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if data:
                chunks.append(data)
                return
            try:
                end(orjson.loads(b"".join(chunks)))
            except orjson.JSONDecodeError:
                end({"error": "the probe said nothing readable"})

        late = {"error": f"the probe did not finish in {PROBE_TIMEOUT:g}s"}
        timer = loop.call_later(PROBE_TIMEOUT, lambda: end(late))
        loop.add_reader(fd, readable)

    def sample(self, extra: set[int]) -> Sample:
        app = self._app
        procs = procfs.scan()
        known = set(app.shell.live) | extra
        groups = known | {procs[pid].pgid for pid in known if pid in procs}
        names = {w.pid: w.name for w in app.tree.workers() if w.pid is not None}
        out = Sample()
        for proc in procfs.descendants(procs, os.getpid()):
            if proc.pid in extra:
                continue
            owner = names.get(proc.pgid) or names.get(proc.ppid)
            where = f" (under {owner})" if owner else ""
            if proc.state == "Z":
                out.zombies[proc.pid] = f"pid {proc.pid} {proc.comm}{where}"
            elif proc.pgid not in groups:
                out.strays[proc.pid] = f"pid {proc.pid} {proc.comm} (group {proc.pgid}){where}"
        if app.broker is not None:
            stats = app.broker.stats()
            out.depth = sum(stats["mailboxes"].values())
            out.calls, out.monitors = stats["pending_calls"], stats["monitors"]
        return out

    def _facts(self, first: Sample, second: Sample, probe: dict[str, Any]) -> Facts:
        app = self._app
        now = app.loop.clock()
        headroom = [(n.name, sum(1 for t in n.history if t > now - n.spec.period), n.spec.intensity)
                    for n in walk(app.tree.root) if isinstance(n, Supervisor)]
        parked = [n.name for n in walk(app.tree.root) if isinstance(n, Worker) and n.held and n.state is State.FAILED]
        notifier = app.notifier
        return Facts(first=first, second=second, probe=probe, root_state=str(app.tree.root.state), parked=parked,
                     headroom=headroom, under_systemd=notifier.enabled,
                     watchdog=notifier.watchdog_interval if notifier.enabled else None,
                     spawn_path=app.shell.spawn_path, guardian_pid=app.shell.guardian.pid)
