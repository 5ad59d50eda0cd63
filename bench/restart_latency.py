"""Restart latency: SIGKILL a supervised `sleep` and time until its replacement has exec'd `sleep` again.

    .venv/bin/python bench/restart_latency.py [--kills 50] [--children 10]

One foundationd with N `sleep 100000` workers under a one_for_one root whose intensity can never be
reached. Each round picks a worker, SIGKILLs it and polls /proc every millisecond (the harness polls;
the daemon does not) for a new child of the daemon whose argv[0] ends in `sleep`. The daemon spawns
through wrappers (`setpriv --pdeathsig KILL -- sh -c GUARD ...` today), so the replacement is first
seen as something else; the moments "old worker reaped", "replacement forked" and "replacement exec'd
sleep" are all recorded. With a 1 ms poll, each figure is an upper bound, one poll interval (plus the
harness's own scheduling delay) late at most; the JSON also holds the matching lower bounds.

In the same run, the floor: fork+exec+wait of /bin/true from Python (subprocess.run), the same through
setpriv, and the daemon's own exec chain (ProcessShell._argv) in front of /bin/true, spawned with the
exact Popen arguments ProcessShell.spawn uses.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    argv0,
    child_pids,
    code_version,
    contention,
    daemon_pid,
    machine,
    print_table,
    running_daemon,
    summary_ms,
    wait_all_exec,
    workers_config,
    write_results,
)
from daemon.core.spec import WorkerSpec
from daemon.shell.process import ProcessShell, find_exec_helper, output_pipes, start_process

SLEEP = "/usr/bin/sleep"
TRUE = "/bin/true"
ROUND_TIMEOUT = 10.0


def floor(argv: list[str], runs: int, warmup: int = 3) -> list[float]:
    """Wall time of fork + exec + exit + wait of ``argv`` via subprocess.run."""
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def daemon_argv(command: list[str]) -> list[str]:
    """The argv ProcessShell.spawn would exec for ``command`` (its wrappers: setpriv, any guard), from here."""
    shell = ProcessShell(lambda fd, cb: None, lambda fd: None, lambda event: None, lambda name, stream, lines: None)
    return shell._argv(WorkerSpec("floor", tuple(command)))  # private on purpose: mirror the daemon exactly


def floor_like_daemon(argv: list[str], runs: int, warmup: int = 3) -> list[float]:
    """ProcessShell.spawn's own start (daemon/shell/process.py start_process: two pipes, own group), plus the wait."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    helper = find_exec_helper()
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        with output_pipes() as (reads, writes):  # stdout's and stderr's, as the daemon makes them
            pid, popen = start_process(argv, env, writes, helper=helper)
        if popen is not None:
            popen.wait()
        else:
            os.waitpid(pid, 0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        for fd in reads:
            os.close(fd)
    return times


def one_restart(dpid: int, victim: int, poll: float) -> dict[str, float | int]:
    """SIGKILL ``victim`` and poll for its replacement; times are seconds since the kill."""
    known = child_pids(dpid)
    assert victim in known, f"pid {victim} is not a child of the daemon"
    assert argv0(victim).endswith("sleep"), f"pid {victim} has not exec'd sleep: {argv0(victim)!r}"
    new_pid = None
    reaped = None  # the killed worker's zombie collected by the daemon
    seen = seen_low = None  # replacement visible (forked: still the daemon's image, or setpriv, or sleep)
    t0 = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    last_miss = t0  # start of the latest poll that did not find the exec'd replacement
    while True:
        start = time.perf_counter()
        if reaped is None and not os.path.exists(f"/proc/{victim}"):
            reaped = start - t0
        candidates = child_pids(dpid) - known if new_pid is None else {new_pid}
        for pid in candidates:
            name = argv0(pid)
            if not name:
                continue
            if new_pid is None:
                new_pid, seen, seen_low = pid, time.perf_counter() - t0, last_miss - t0
            if name.endswith("sleep"):
                done = time.perf_counter() - t0
                return {"old_pid": victim, "new_pid": pid, "reaped_s": reaped, "spawned_s": seen,
                        "spawned_low_s": seen_low, "exec_s": done, "exec_low_s": last_miss - t0}
        last_miss = start
        if start - t0 > ROUND_TIMEOUT:
            raise TimeoutError(f"no replacement for pid {victim} after {ROUND_TIMEOUT}s")
        time.sleep(poll)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="measured kills (default 50)")
    parser.add_argument("--children", type=int, default=10, help="supervised sleep workers (default 10)")
    parser.add_argument("--floor-runs", type=int, default=50, help="runs of each floor measurement (default 50)")
    parser.add_argument("--poll", type=float, default=0.001, help="harness poll interval in seconds (default 0.001)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the choice of victims")
    parser.add_argument("--out", help="JSON output (default bench/results/restart_latency.json)")
    args = parser.parse_args()
    busy_start = contention()

    setpriv = shutil.which("setpriv")
    rng = random.Random(args.seed)
    config = workers_config(args.children, [SLEEP, "100000"], intensity=100000, period=1.0)
    rounds = []
    with running_daemon(config) as daemon:
        dpid = daemon_pid(daemon)
        pids = wait_all_exec(daemon, "sleep", args.children)
        names = sorted(pids)

        chain = daemon_argv([TRUE])
        floors = {"true": floor([TRUE], args.floor_runs)}
        if setpriv:
            floors["setpriv_true"] = floor([setpriv, "--pdeathsig", "KILL", "--", TRUE], args.floor_runs)
        floors["daemon_chain_true"] = floor_like_daemon(chain, args.floor_runs)

        for i in range(args.kills + 1):  # round 0 warms the daemon's code paths and is not counted
            name = rng.choice(names)
            victim = daemon.pid(name)
            assert victim is not None
            result = one_restart(dpid, victim, args.poll)
            # The daemon must agree: same pid, running. Then let it settle before the next kill.
            confirmed = daemon.wait_running(name, not_pid=victim)
            assert confirmed == result["new_pid"], (confirmed, result)
            time.sleep(0.02)
            if i > 0:
                rounds.append({"child": name, **result})
        daemon_log_lines = len(daemon.log().splitlines())

    restart = {
        "reaped": summary_ms([r["reaped_s"] if r["reaped_s"] is not None else r["exec_s"] for r in rounds]),
        "spawned": summary_ms([r["spawned_s"] for r in rounds]),
        "exec_sleep": summary_ms([r["exec_s"] for r in rounds]),
        "exec_sleep_lower_bound": summary_ms([r["exec_low_s"] for r in rounds]),
    }
    floor_summary = {k: summary_ms(v) for k, v in floors.items()}
    data = {
        "benchmark": "restart_latency",
        "machine": machine(),
        "code": code_version(),
        "contention": {"start": busy_start, "end": contention()},
        "params": {"kills": args.kills, "children": args.children, "floor_runs": args.floor_runs,
                   "poll_s": args.poll, "seed": args.seed, "intensity": 100000, "period": 1.0},
        "restart": restart,
        "floor": floor_summary,
        "daemon_exec_chain": chain,
        "daemon_log_lines": daemon_log_lines,
        "rounds": rounds,
    }
    out = write_results("restart_latency", data, args.out)

    rows = [
        ["restart: kill -> old worker reaped", *_cols(restart["reaped"])],
        ["restart: kill -> replacement forked", *_cols(restart["spawned"])],
        ["restart: kill -> replacement exec'd sleep", *_cols(restart["exec_sleep"])],
        ["  (lower bound, 1 poll earlier)", *_cols(restart["exec_sleep_lower_bound"])],
        ["floor: subprocess.run /bin/true", *_cols(floor_summary["true"])],
    ]
    if "setpriv_true" in floor_summary:
        rows.append(["floor: subprocess.run setpriv -- /bin/true", *_cols(floor_summary["setpriv_true"])])
    rows.append(["floor: daemon's start_process + exec chain -> /bin/true", *_cols(floor_summary["daemon_chain_true"])])
    print(f"restart latency: {args.kills} kills, {args.children} children; "
          f"{data['machine']['nproc']} CPUs, {data['machine']['cpu_model']}; "
          f"load {busy_start['loadavg'][0]}, CPU pressure {busy_start['cpu_pressure_some_avg10']}%")
    print_table(["ms", "n", "p50", "p95", "max"], rows)
    print(f"daemon exec chain: {' '.join(chain)}")
    print(f"results: {out}")
    return 0


def _cols(s: dict[str, float]) -> list[float]:
    return [s["n"], s["p50_ms"], s["p95_ms"], s["max_ms"]]


if __name__ == "__main__":
    raise SystemExit(main())
