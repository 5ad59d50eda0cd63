"""Foundation side by side with circus and supervisord: same work, same machine, one run, one table.

    .venv/bin/python bench/compare.py [--only restart,cold,idle,control,messaging] [--targets KEY,...]

For each scenario, each target (Foundation; circusd and supervisord each with its defaults and with its
fastest settings, see bench/anchors.py) is started in turn in a fresh temporary directory, measured and
stopped; then the physical floor of the scenario is measured in the same run. The harness polls /proc
(1 ms) and the control interfaces; the daemons are left to their own mechanisms. It prints one table (rows:
measurements, columns: targets and the floor) and writes every sample, the machine, the load and the
settings to bench/results/compare.json. It asserts nothing about speed.

Scenarios (names for --only):
  restart    10 `sleep` children; SIGKILL the oldest, time until its replacement has exec'd sleep.
  cold       N `sleep` children (--cold-n): launch -> all running, then SIGTERM -> all gone;
             and --agents counter agents (Foundation only): launch -> all running in `status`.
  idle       100 `sleep` children left alone: daemon CPU %, wake-ups/s, RSS.
  control    100 sequential status requests on one connection, with each of --control-n children.
  messaging  Foundation only: durable send (one at a time, pipelined), call round trip, agent restart
             to ready; floors: Unix-socket echo, pyzmq DEALER/ROUTER echo, LMDB durable 1 KB commit.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil

from daemon.shell.process import find_exec_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import floors
from bench.anchors import TARGETS, Run, Target, become_subreaper, describe_settings, launch
from bench.common import (
    code_version,
    contention,
    context_switches,
    machine,
    percentile,
    write_results,
)
from bench.idle_cost import delta, schedstat_ns
from bench.restart_latency import daemon_argv, floor_like_daemon, one_restart

SCENARIOS = ("restart", "cold", "idle", "control", "messaging")
MIB = 1024 * 1024


def ms(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of samples in seconds, as milliseconds."""
    v = [s * 1000 for s in samples]
    return {"n": len(v), "p50_ms": round(percentile(v, 50), 3), "p95_ms": round(percentile(v, 95), 3),
            "p99_ms": round(percentile(v, 99), 3), "max_ms": round(max(v), 3)}


def code_state() -> dict[str, Any]:
    """The commit, and a hash of the code the daemons run (daemon/, ipc/, agents/, the exec helper if built):
    taken at the start and the end of a run, so that a tree edited meanwhile is noticed."""
    h = hashlib.sha256()
    repo = Path(__file__).resolve().parent.parent
    files = sorted(p for d in ("daemon", "ipc", "agents") for p in (repo / d).rglob("*") if p.suffix in (".py", ".c"))
    found = find_exec_helper()  # where the daemon looks: next to the package first, then the venv's bin/
    helper = Path(found) if found else Path(sys.executable).parent / "foundation-exec"
    for path in [*files, helper]:
        with contextlib.suppress(OSError):
            h.update(str(path.relative_to(repo) if path.is_relative_to(repo) else path).encode())
            h.update(path.read_bytes())
    return {**code_version(), "tree_sha256": h.hexdigest()[:16], "exec_helper": helper.exists()}


def warm_bytecode() -> None:
    """Compile daemon/, ipc/ and agents/ into __pycache__ before launching anything.

    An installed daemon starts from cached bytecode (pip compiles circus and supervisor at install; foundationd
    writes its own cache at its first start). This editable tree is not compiled at install, and with
    PYTHONDONTWRITEBYTECODE set, or after an edit, every launch of foundationd would compile the changed
    modules again: ~30 ms of its boot that no installed daemon pays.
    """
    repo = Path(__file__).resolve().parent.parent
    for package in ("daemon", "ipc", "agents"):
        compileall.compile_dir(repo / package, quiet=1)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.targets = [t for t in TARGETS if not args.targets or t.key in args.targets.split(",")]
        self.results: dict[str, Any] = {}
        self.floor: dict[str, Any] = {}
        self.load: dict[str, Any] = {}

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def quiet(self, scenario: str) -> None:
        """Prefer quiet moments: wait (up to --quiet-wait s) until CPU pressure and load are low; record them."""
        deadline = time.monotonic() + self.args.quiet_wait
        while True:
            c = contention()
            busy = (c["cpu_pressure_some_avg10"] or 0) > self.args.quiet_psi or c["loadavg"][0] > self.args.quiet_load
            if not busy or time.monotonic() >= deadline:
                break
            self.log(f"machine busy ({c}); waiting for a quiet moment")
            time.sleep(5)
        waited = self.args.quiet_wait - max(0.0, deadline - time.monotonic())
        self.load[scenario] = {"before": c, "waited_s": round(waited, 1)}

    def loaded(self, scenario: str) -> None:
        self.load[scenario]["after"] = contention()

    # ---- restart ----

    def restart(self) -> None:
        a = self.args
        out = self.results.setdefault("restart", {})
        rng = random.Random(a.seed)
        for target in self.targets:
            with launch(target, a.restart_children, restart_heavy=True) as run:
                run.wait_sleepers(a.restart_children)
                time.sleep(a.settle)
                order = sorted(run.sleepers())  # oldest first: a victim has run longest (supervisord's startsecs)
                rounds: list[dict[str, Any]] = []
                t_start = time.monotonic()
                for i in range(a.kills + 1):  # round 0 warms up and is not counted
                    if i > a.min_kills and time.monotonic() - t_start > a.restart_budget:
                        break
                    time.sleep(rng.uniform(0, target.poll_period))
                    victim = order.pop(0)
                    r = one_restart(run.pid, victim, a.poll)
                    order.append(r["new_pid"])
                    _wait(lambda: len(run.sleepers()) >= a.restart_children, 15, f"{target.key}: all running again")
                    time.sleep(0.02)
                    if i:
                        rounds.append(r)
                cpu = psutil.Process(run.pid).cpu_times()
                out[target.key] = {
                    "exec_sleep": ms([r["exec_s"] for r in rounds]),
                    "exec_sleep_lower_bound": ms([r["exec_low_s"] for r in rounds]),
                    "spawned": ms([r["spawned_s"] for r in rounds]),
                    "daemon_cpu_s": round(cpu.user + cpu.system, 3),
                    "rounds": rounds,
                }
            out[target.key]["leftovers"] = run.leftovers
            s = out[target.key]["exec_sleep"]
            self.log(f"restart {target.key}: p50 {s['p50_ms']} ms, p95 {s['p95_ms']}, max {s['max_ms']} (n={s['n']})")
        self.floor["fork_exec_true"] = ms(floors.fork_exec_true(a.floor_runs))
        self.floor["posix_spawn_true"] = ms(floors.posix_spawn_true(a.floor_runs))
        if any(t.kind == "foundation" for t in self.targets):
            chain = daemon_argv([floors.TRUE])  # what foundationd execs in front of a command, today
            self.floor["daemon_chain_true"] = {**ms(floor_like_daemon(chain, a.floor_runs)), "argv": chain}

    # ---- cold start and stop ----

    def cold(self) -> None:
        a = self.args
        out = self.results.setdefault("cold", {})
        for n in a.cold_n:
            for target in self.targets:
                reps = []
                for _ in range(a.cold_reps):
                    with launch(target, n) as run:
                        first, everyone = run.wait_sleepers(n, poll=a.poll)
                        time.sleep(a.settle)
                        stop = run.stop_timed(poll=a.poll)
                    reps.append({"first_s": round(first, 4), "all_s": round(everyone, 4), "stop_s": round(stop, 4),
                                 "leftovers": run.leftovers})
                out.setdefault(str(n), {})[target.key] = _median_reps(reps)
                r = out[str(n)][target.key]
                self.log(f"cold {n} {target.key}: all running {r['all_s']} s (first {r['first_s']}), "
                         f"stop {r['stop_s']} s")
            floor = [floors.spawn_and_stop_sleepers(n) for _ in range(max(1, a.cold_reps))]
            self.floor[f"spawn_{n}"] = {"start_s": round(sorted(f[0] for f in floor)[len(floor) // 2], 4),
                                        "stop_s": round(sorted(f[1] for f in floor)[len(floor) // 2], 4)}
        target = next((t for t in self.targets if t.kind == "foundation"), None)
        for n in _agent_counts(a.agents) if target is not None else []:
            reps = [self._agents_cold(target, n) for _ in range(a.cold_reps)]
            out[_agents_key(n, a.agents)] = {target.key: _median_reps(reps)}
            r = out[_agents_key(n, a.agents)][target.key]
            self.log(f"cold {n} agents: all running {r['all_s']} s, stop {r['stop_s']} s, "
                     f"USS {r['uss_per_agent_mib']} MiB per agent")
            if n <= SDK_PARALLEL_MAX:  # n interpreters importing at once: a reference, and a load spike past this
                self.floor[_agents_key(n, a.agents, "sdk_start_parallel")] = {
                    "all_s": round(floors.python_sdk_start_parallel(n), 4)}
            zygote = floors.zygote_start(3, parallel=n)
            self.floor[_agents_key(n, a.agents, "zygote_start_parallel")] = {"all_s": round(sorted(zygote)[1], 4)}

    def _agents_cold(self, target: Target, n: int) -> dict[str, Any]:
        with launch(target, 0, agents=n) as run:
            client = run.connect_when_ready()
            try:
                boot = time.perf_counter() - run.launched
                while True:
                    workers = client.status()["tree"]["children"]
                    if sum(1 for w in workers if w["state"] == "running") >= n:
                        everyone = time.perf_counter() - run.launched
                        break
                    if time.perf_counter() - run.launched > 600:
                        raise TimeoutError(f"agents not running after 600 s: {workers}")
                    # Not every ms: a status of 500 agents costs the daemon ~2 ms, which would delay their hellos
                    time.sleep(max(self.args.poll, AGENT_STATUS_POLL))
            finally:
                client.close()
            time.sleep(self.args.settle)
            uss = [_uss(w["pid"]) for w in workers if w.get("pid")]  # each agent's own pages, after the settle
            stop = run.stop_timed(poll=self.args.poll)
        return {"control_up_s": round(boot, 4), "all_s": round(everyone, 4), "stop_s": round(stop, 4),
                "uss_per_agent_mib": round(sum(uss) / max(1, len(uss)) / MIB, 2), "leftovers": run.leftovers}

    # ---- idle ----

    def idle(self) -> None:
        a = self.args
        out = self.results.setdefault("idle", {})
        for target in self.targets:
            with launch(target, a.idle_children) as run:
                run.wait_sleepers(a.idle_children)
                time.sleep(a.idle_settle)
                proc = psutil.Process(run.pid)
                kids_before = run.sleepers()
                cpu0, sched0, csw0 = proc.cpu_times(), schedstat_ns(run.pid), context_switches(run.pid)
                t0 = time.perf_counter()
                time.sleep(a.idle_seconds)
                wall = time.perf_counter() - t0
                cpu1, sched1, csw1 = proc.cpu_times(), schedstat_ns(run.pid), context_switches(run.pid)
                mem = proc.memory_full_info()
                threads = proc.num_threads()
                restarted = len(kids_before - run.sleepers())
            vol = delta({t: v for t, (v, _) in csw0.items()}, {t: v for t, (v, _) in csw1.items()})
            invol = delta({t: n for t, (_, n) in csw0.items()}, {t: n for t, (_, n) in csw1.items()})
            out[target.key] = {
                "cpu_percent_psutil": round(100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall, 3),
                "cpu_percent": round(100 * delta(sched0, sched1) / 1e9 / wall, 4),
                "wakeups_per_s": round((vol + invol) / wall, 2),
                "voluntary": vol, "nonvoluntary": invol,
                "rss_mib": round(mem.rss / MIB, 1), "uss_mib": round(mem.uss / MIB, 1),
                "threads": threads, "children_restarted": restarted, "wall_s": round(wall, 2),
                "leftovers": run.leftovers,
            }
            r = out[target.key]
            self.log(f"idle {target.key}: CPU {r['cpu_percent']} %, {r['wakeups_per_s']} wake-ups/s, "
                     f"RSS {r['rss_mib']} MiB")

    # ---- control latency ----

    def control(self) -> None:
        a = self.args
        out = self.results.setdefault("control", {})
        for n in a.control_n:
            for target in self.targets:
                with launch(target, n) as run:
                    run.wait_sleepers(n, timeout=300)
                    time.sleep(a.settle)
                    client = run.connect_when_ready()
                    try:
                        for _ in range(5):
                            client.status()
                        times = []
                        size = 0
                        t_start = time.monotonic()
                        for i in range(a.requests):
                            # supervisord answers 1,000 children in ~0.7 s: bound the time, not the figure's meaning
                            if i >= 10 and time.monotonic() - t_start > a.control_budget:
                                break
                            t0 = time.perf_counter()
                            reply = client.status()
                            times.append(time.perf_counter() - t0)
                        size = len(orjson.dumps(reply, default=str))
                    finally:
                        client.close()
                out.setdefault(str(n), {})[target.key] = {**ms(times), "request": client.what, "reply_json_bytes": size,
                                                           "samples_ms": [round(t * 1000, 4) for t in times],
                                                           "leftovers": run.leftovers}
                r = out[str(n)][target.key]
                self.log(f"control {n} {target.key}: p50 {r['p50_ms']} ms, p95 {r['p95_ms']}")
        self.floor["unix_echo_rtt"] = ms(floors.unix_echo_rtt(max(a.requests, 200)))

    # ---- messaging and state (Foundation only) ----

    def messaging(self) -> None:
        a = self.args
        target = next((t for t in self.targets if t.kind == "foundation"), None)
        if target is None:
            return
        out: dict[str, Any] = {}
        with launch(target, 0, agents=1, restart_heavy=True) as run:
            client = run.connect_when_ready().raw
            try:
                _wait(lambda: _agent(client)["state"] == "running", 30, "counter running")
                # Calls first: a call queues behind earlier casts in the counter's mailbox.
                for _ in range(10):
                    client.request("call", name="counter", body={"get": True})
                times = []
                for _ in range(a.calls):
                    t0 = time.perf_counter()
                    client.request("call", name="counter", body={"get": True})
                    times.append(time.perf_counter() - t0)
                out["call"] = ms(times)
                self.log(f"messaging: call p50 {out['call']['p50_ms']} ms")
                out["agent_restart"] = self._agent_restarts(run, client)
                self.log(f"messaging: agent restart-to-ready p50 {out['agent_restart']['ready']['p50_ms']} ms")
                times = []
                for _ in range(a.serial_sends):
                    t0 = time.perf_counter()
                    client.request("send", name="counter", body={"add": 1})
                    times.append(time.perf_counter() - t0)
                out["send_serial"] = ms(times)
                self.log(f"messaging: send one at a time p50 {out['send_serial']['p50_ms']} ms")
                out["send_pipelined"] = _pipelined_sends(str(run.tmp / "run" / "control.sock"), a.sends, a.window)
                self.log(f"messaging: pipelined {out['send_pipelined']['per_s']} sends/s")
            finally:
                client.close()
        out["leftovers"] = run.leftovers
        self.results["messaging"] = {target.key: out}
        self.floor["zmq_rtt"] = ms(floors.zmq_rtt(max(a.calls, 500)))
        self.floor["lmdb_commit_1k"] = ms(floors.lmdb_commit(a.floor_runs * 4))
        self.floor["sdk_start"] = ms(floors.python_sdk_start(max(5, a.floor_runs // 5)))
        self.floor["zygote_start"] = ms(floors.zygote_start(max(10, a.floor_runs // 2)))
        self.floor.setdefault("unix_echo_rtt", ms(floors.unix_echo_rtt(200)))

    def _agent_restarts(self, run: Run, client: Any) -> dict[str, Any]:
        a = self.args
        rounds = []
        for i in range(a.agent_kills + 1):
            node = _agent(client)
            old = node["pid"]
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            spawned = None
            while True:
                now = time.perf_counter()
                node = _agent(client)
                if spawned is None and node["pid"] not in (None, old):  # the daemon has started the new one
                    spawned = now - t0
                if node["state"] == "running" and node["pid"] not in (None, old):
                    ready = time.perf_counter() - t0
                    break
                if now - t0 > 30:
                    raise TimeoutError(f"counter not running again 30 s after SIGKILL: {node}")
                time.sleep(a.poll)
            if i:
                rounds.append({"spawned_s": spawned if spawned is not None else ready, "ready_s": ready})
            time.sleep(0.05)
        return {"ready": ms([r["ready_s"] for r in rounds]), "spawned": ms([r["spawned_s"] for r in rounds]),
                "rounds": rounds}

    # ---- output ----

    def table(self) -> tuple[list[str], list[list[str]]]:
        t = _Table(self.targets)
        a, R, F = self.args, self.results, self.floor
        if "restart" in R:
            rs, ft = R["restart"], F.get("fork_exec_true", {})
            t.row("restart p50 ms (10 sleep, SIGKILL)",
                  lambda r: _n(r["exec_sleep"]["p50_ms"], r["exec_sleep"]["n"], a.kills), rs, ft.get("p50_ms"))
            t.row("restart p95 ms", lambda r: r["exec_sleep"]["p95_ms"], rs, ft.get("p95_ms"))
            t.row("restart max ms", lambda r: r["exec_sleep"]["max_ms"], rs, ft.get("max_ms"))
            t.row("  p50 lower bound (one poll earlier) ms", lambda r: r["exec_sleep_lower_bound"]["p50_ms"], rs)
            t.row("  kill -> replacement forked p50 ms", lambda r: r["spawned"]["p50_ms"], rs)
            t.floor_only("  floor via foundationd's exec chain p50 ms", F.get("daemon_chain_true", {}).get("p50_ms"))
        if "cold" in R:
            for n in a.cold_n:
                c, fl = R["cold"].get(str(n)), F.get(f"spawn_{n}", {})
                t.row(f"cold start {n} sleep s (launch->all)", lambda r: r["all_s"], c, fl.get("start_s"))
                t.row("  first child s (launch->first)", lambda r: r["first_s"], c)
            for n in a.cold_n:
                c, fl = R["cold"].get(str(n)), F.get(f"spawn_{n}", {})
                t.row(f"stop {n} sleep s (SIGTERM->all gone)", lambda r: r["stop_s"], c, fl.get("stop_s"))
            for n in _agent_counts(a.agents):
                ag = R["cold"].get(_agents_key(n, a.agents))
                t.row(f"cold start {n} agents s (->running)", lambda r: r["all_s"], ag,
                      F.get(_agents_key(n, a.agents, "zygote_start_parallel"), {}).get("all_s"))
                t.floor_only(f"  {n} python+SDK imports at once, no zygote s",
                             F.get(_agents_key(n, a.agents, "sdk_start_parallel"), {}).get("all_s"))
                t.row(f"stop {n} agents s", lambda r: r["stop_s"], ag)
                t.row(f"USS per idle agent MiB ({n} agents)", lambda r: r["uss_per_agent_mib"], ag)
        if "idle" in R:
            t.row(f"idle CPU % ({a.idle_children} sleep, {a.idle_seconds:g} s)", lambda r: r["cpu_percent"],
                  R["idle"], 0)
            t.row("idle wake-ups/s", lambda r: r["wakeups_per_s"], R["idle"], 0)
            t.row("idle RSS MiB", lambda r: r["rss_mib"], R["idle"])
        if "control" in R:
            ue = F.get("unix_echo_rtt", {})
            for n in a.control_n:
                c = R["control"].get(str(n))
                t.row(f"status p50 ms ({n} children)", lambda r: _n(r["p50_ms"], r["n"], a.requests), c,
                      ue.get("p50_ms"))
                t.row(f"status p95 ms ({n} children)", lambda r: r["p95_ms"], c, ue.get("p95_ms"))
        if "messaging" in R:
            m, lm, zy = R["messaging"], F.get("lmdb_commit_1k", {}), F.get("zygote_start", {})
            t.row("send 1-at-a-time p50 ms (durable)", lambda r: r["send_serial"]["p50_ms"], m, lm.get("p50_ms"))
            t.row("send 1-at-a-time p99 ms", lambda r: r["send_serial"]["p99_ms"], m, lm.get("p99_ms"))
            t.row(f"send pipelined msgs/s (window {a.window})", lambda r: r["send_pipelined"]["per_s"], m)
            t.row("send pipelined accept p50 ms", lambda r: r["send_pipelined"]["p50_ms"], m)
            t.row("send pipelined accept p99 ms", lambda r: r["send_pipelined"]["p99_ms"], m)
            t.row("call round trip p50 ms", lambda r: r["call"]["p50_ms"], m, F.get("zmq_rtt", {}).get("p50_ms"))
            t.row("agent restart->ready p50 ms", lambda r: r["agent_restart"]["ready"]["p50_ms"], m, zy.get("p50_ms"))
            t.row("agent restart->ready p95 ms", lambda r: r["agent_restart"]["ready"]["p95_ms"], m, zy.get("p95_ms"))
            t.row("  kill -> new agent pid in status p50 ms", lambda r: r["agent_restart"]["spawned"]["p50_ms"], m)
            t.floor_only("  python start + SDK import, no zygote p50 ms", F.get("sdk_start", {}).get("p50_ms"))
        return t.headers, t.rows


def next_targets(args: argparse.Namespace, R: dict[str, Any], F: dict[str, Any],
                 key: str = "foundation") -> list[list[str]]:
    """Issue 17's targets for Foundation that this run measured: [target, measured, met or not]."""
    out: list[list[str]] = []

    def add(what: str, value: Any, limit: float, shown: str = "") -> None:
        if isinstance(value, int | float):
            out.append([what, shown or _cell(value), "met" if value <= limit else "NOT met"])

    restart = R.get("restart", {}).get(key, {}).get("exec_sleep", {}).get("p50_ms")
    floor = F.get("fork_exec_true", {}).get("p50_ms")
    if isinstance(restart, float) and isinstance(floor, float):
        add("restart of a sleep child p50 <= 2x fork+exec floor", restart / floor, 2.0,
            f"{_cell(restart)} ms = {restart / floor:.2f}x the floor ({_cell(floor)} ms)")
    ready = R.get("messaging", {}).get(key, {}).get("agent_restart", {}).get("ready", {}).get("p50_ms")
    add("agent restart to ready p50 <= 5 ms", ready, 5.0, f"{_cell(ready)} ms")
    for n in _agent_counts(args.agents):
        cold = R.get("cold", {}).get(_agents_key(n, args.agents), {}).get(key, {})
        if n == 500:
            add("cold start of 500 agents <= 1 s", cold.get("all_s"), 1.0, f"{_cell(cold.get('all_s'))} s")
        if n >= 100:
            add(f"memory per idle agent (USS) <= 4 MiB ({n} agents)", cold.get("uss_per_agent_mib"), 4.0,
                f"{_cell(cold.get('uss_per_agent_mib'))} MiB")
    if 500 in args.cold_n:
        cold = R.get("cold", {}).get("500", {}).get(key, {}).get("all_s")
        add("cold start of 500 sleep <= 0.3 s", cold, 0.3,
            f"{_cell(cold)} s (floor {_cell(F.get('spawn_500', {}).get('start_s'))} s)")
    if 10000 in args.control_n:
        st = R.get("control", {}).get("10000", {}).get(key, {}).get("p50_ms")
        add("status with 10,000 children p50 <= 15 ms", st, 15.0, f"{_cell(st)} ms")
    if args.idle_children >= 1000:
        wake = R.get("idle", {}).get(key, {}).get("wakeups_per_s")
        add(f"idle wake-ups/s with {args.idle_children} children == 0", wake, 0.0, f"{_cell(wake)}/s")
    return out


class _Table:
    """Rows are measurements, columns the targets and the floor; '-' where a target was not measured."""

    def __init__(self, targets: list[Target]) -> None:
        self.keys = [t.key for t in targets]
        self.headers = ["", *self.keys, "floor"]
        self.rows: list[list[str]] = [["settings", *[_short(t) for t in targets], "this machine"]]

    def row(self, label: str, get: Callable[[Any], Any], source: dict[str, Any] | None, floor: Any = None) -> None:
        if source is None:
            return
        cells = []
        for k in self.keys:
            try:
                cells.append(_cell(get(source[k])))
            except (KeyError, TypeError):
                cells.append("-")
        self.rows.append([label, *cells, _cell(floor)])

    def floor_only(self, label: str, floor: Any) -> None:
        if floor is not None:
            self.rows.append([label, *["" for _ in self.keys], _cell(floor)])


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s: {what}")
        time.sleep(0.001)


def _agent(client: Any) -> dict[str, Any]:
    return next(c for c in client.request("status")["tree"]["children"] if c["name"] == "counter")


SDK_PARALLEL_MAX = 50
AGENT_STATUS_POLL = 0.02  # s between status requests while agents start


def _agent_counts(agents: int | list[int]) -> list[int]:
    """--agents as a list (a saved run from before it took several counts has one number)."""
    return [agents] if isinstance(agents, int) else [n for n in agents if n > 0]


def _agents_key(n: int, agents: int | list[int], name: str = "agents") -> str:
    """The first count keeps the key a single count always had ("agents"); more counts get "agents_N"."""
    return name if n == _agent_counts(agents)[0] else f"{name}_{n}"


def _uss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_full_info().uss)
    except psutil.Error:
        return 0


def _median_reps(reps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in reps[0]:
        values = [r[key] for r in reps]
        if all(isinstance(v, int | float) for v in values):
            out[key] = sorted(values)[len(values) // 2]
        else:
            out[key] = [x for v in values for x in v] if all(isinstance(v, list) for v in values) else values
    if len(reps) > 1:
        out["reps"] = reps
    return out


def _pipelined_sends(path: str, total: int, window: int) -> dict[str, Any]:
    """``total`` sends with up to ``window`` unanswered, over one raw connection; accept latency of each."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(60)
    sent_at = [0.0] * total
    latency = [0.0] * total
    buf = b""
    nxt = done = errors = 0
    try:
        t_start = time.perf_counter()
        while done < total:
            batch = []
            while nxt < total and nxt - done < window:
                batch.append(orjson.dumps({"id": nxt, "verb": "send",
                                           "args": {"name": "counter", "body": {"add": 1}}}) + b"\n")
                nxt += 1
            if batch:
                now = time.perf_counter()
                for i in range(nxt - len(batch), nxt):
                    sent_at[i] = now
                s.sendall(b"".join(batch))
            chunk = s.recv(1 << 20)
            now = time.perf_counter()
            if not chunk:
                raise ConnectionError("daemon closed the control connection")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                reply = orjson.loads(line)
                latency[reply["id"]] = now - sent_at[reply["id"]]
                done += 1
                errors += 0 if reply.get("ok") else 1
        wall = time.perf_counter() - t_start
    finally:
        s.close()
    return {**ms(latency), "per_s": round(total / wall, 1), "wall_s": round(wall, 3), "errors": errors,
            "window": window}


def _n(value: float, n: int, wanted: int) -> str:
    """A figure, with its sample count when the time budget cut it short."""
    return _cell(value) if n >= wanted else f"{_cell(value)} (n={n})"


def _short(t: Target) -> str:
    return {"foundation": "defaults", "circus": "defaults", "circus-fast": "check_delay=.01",
            "supervisord": "defaults", "supervisord-fast": "startsecs=0,autorestart"}.get(t.key, t.settings)


def _cell(v: Any) -> str:
    if v == "" or v is None:
        return ""
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def render(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    out = []
    for n, r in enumerate([headers, *rows]):
        cells = zip(r, widths, strict=True)
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios (default all)")
    p.add_argument("--targets", default="",
                   help=f"comma-separated targets (default all: {','.join(t.key for t in TARGETS)})")
    p.add_argument("--kills", type=int, default=50, help="restart: kills per target (default 50)")
    p.add_argument("--seed", type=int, default=1, help="restart: seed for the kills' random phase (default 1)")
    p.add_argument("--min-kills", type=int, default=8, help="restart: kills measured even past the budget (default 8)")
    p.add_argument("--restart-budget", type=float, default=30.0,
                   help="restart: s per target after which no kill starts once --min-kills are done (default 30)")
    p.add_argument("--restart-children", type=int, default=10, help="restart: sleep children (default 10)")
    p.add_argument("--cold-n", type=_ints, default=[10, 100, 500], help="cold: children counts (default 10,100,500)")
    p.add_argument("--cold-reps", type=int, default=1, help="cold: repetitions, the median is shown (default 1)")
    p.add_argument("--agents", type=_ints, default=[10],
                   help="cold: counter agents, Foundation only, one run per count (default 10; 0: skip)")
    p.add_argument("--idle-children", type=int, default=100, help="idle: sleep children (default 100)")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle: measurement window (default 10)")
    p.add_argument("--idle-settle", type=float, default=2.0, help="idle: quiet time before the window (default 2)")
    p.add_argument("--control-n", type=_ints, default=[100, 1000], help="control: children counts (default 100,1000)")
    p.add_argument("--requests", type=int, default=100, help="control: sequential status requests (default 100)")
    p.add_argument("--control-budget", type=float, default=10.0,
                   help="control: s per target after which no request starts once 10 are done (default 10)")
    p.add_argument("--calls", type=int, default=200, help="messaging: call round trips (default 200)")
    p.add_argument("--serial-sends", type=int, default=300, help="messaging: sends one at a time (default 300)")
    p.add_argument("--sends", type=int, default=3000, help="messaging: pipelined sends (default 3000)")
    p.add_argument("--window", type=int, default=256, help="messaging: unanswered sends at most (default 256)")
    p.add_argument("--agent-kills", type=int, default=20, help="messaging: SIGKILLs of the agent (default 20)")
    p.add_argument("--floor-runs", type=int, default=50, help="runs of each floor measurement (default 50)")
    p.add_argument("--poll", type=float, default=0.001, help="harness poll interval, s (default 0.001)")
    p.add_argument("--settle", type=float, default=1.0, help="pause after all children run, s (default 1)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before each scenario wait up to this many s for a quiet machine (default 0)")
    p.add_argument("--quiet-psi", type=float, default=5.0, help="quiet: CPU pressure avg10 %% at most (default 5)")
    p.add_argument("--quiet-load", type=float, default=1.0, help="quiet: 1-min load average at most (default 1)")
    p.add_argument("--json", help="results file (default bench/results/compare.json)")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument("--render", metavar="JSON", help="measure nothing: print the table of an earlier results file")
    return p


def render_saved(path: str, markdown: bool) -> int:
    data = json.loads(Path(path).read_text())
    args = argparse.Namespace(**data["params"])
    h = Harness(args)
    h.results, h.floor = data["results"], data["floor"]
    headers, rows = h.table()
    print(f"{path}: {data['machine']['date']}, commit {data['code']['commit'][:10]}; command: {data['command']}")
    print(render(headers, rows, markdown=markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.render:
        return render_saved(args.render, args.markdown)
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {','.join(SCENARIOS)}")

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    become_subreaper()
    warm_bytecode()
    code_start = code_state()
    h = Harness(args)
    info = machine()
    started = time.perf_counter()
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    h.log(f"machine: nproc={info['nproc']} cpu={info['cpu_model']!r} kernel={info['kernel']} python={info['python']}")
    h.log(f"command: {command}")
    try:
        for scenario in SCENARIOS:
            if scenario in chosen:
                h.quiet(scenario)
                h.log(f"--- {scenario} (load {h.load[scenario]['before']})")
                getattr(h, scenario)()
                h.loaded(scenario)
    finally:
        headers, rows = h.table()
        leftovers = _all_leftovers(h.results)
        code_end = code_state()
        data = {"benchmark": "compare", "machine": info, "code": code_start, "code_end": code_end, "command": command,
                "params": dict(vars(args).items()), "targets": describe_settings(),
                "load": h.load, "duration_s": round(time.perf_counter() - started, 1), "leftovers": leftovers,
                "results": h.results, "floor": h.floor, "table": {"headers": headers, "rows": rows}}
        out = write_results("compare", data, args.json)
    print(f"machine: nproc={info['nproc']}, {info['cpu_model']}, kernel {info['kernel']}, Python {info['python']}; "
          f"{info['date']}")
    print(f"command: {command}")
    print(f"code: commit {code_start['commit'][:10]}, tree {code_start['tree_sha256']}, "
          f"exec helper {'built' if code_start['exec_helper'] else 'absent'}")
    if code_end["tree_sha256"] != code_start["tree_sha256"]:
        print(f"WARNING: the code under test changed during the run (tree {code_end['tree_sha256']} at the end, "
              f"commit {code_end['commit'][:10]}): the figures mix two versions")
    print("load (1-min avg) before each scenario: "
          + ", ".join(f"{k} {v['before']['loadavg'][0]}" for k, v in h.load.items()))
    for t in h.targets:
        print(f"  {t.key:17} {t.settings}")
    print()
    print(render(headers, rows))
    if args.markdown:
        print()
        print(render(headers, rows, markdown=True))
    goals = next_targets(args, h.results, h.floor)
    if goals:
        print("\nissue 17's targets measured in this run:")
        print(render(["target", "Foundation", ""], goals, markdown=args.markdown))
    print(f"\nleft behind by the daemons (killed at teardown): {leftovers or 'nothing'}")
    print(f"results: {out} ({data['duration_s']} s)")
    return 0


def _all_leftovers(results: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "leftovers" and isinstance(v, list):
                    found.extend(str(x) for x in v)
                else:
                    walk(v)

    walk(results)
    return found


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
