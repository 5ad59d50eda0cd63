"""Idle cost: what foundationd spends while 100 healthy `sleep` workers do nothing.

    .venv/bin/python bench/idle_cost.py [--children 100] [--seconds 10]

Starts foundationd with N `sleep 100000` workers, waits until every one has exec'd `sleep`, lets the
daemon settle, then leaves it alone (no control requests) for the measurement window and reads:

* CPU: psutil cpu_times (user + system) delta over wall time. Those come in clock ticks (10 ms), which
  over 10 s is a resolution of 0.1 %, the size of the target itself, so the per-thread scheduler
  runtime from /proc/PID/task/*/schedstat (nanoseconds) is reported next to it.
* RSS (and USS) at the end of the window, in MiB.
* Wake-ups per second: voluntary + nonvoluntary context switches summed over all threads
  (/proc/PID/task/*/status).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    code_version,
    contention,
    context_switches,
    daemon_pid,
    machine,
    print_table,
    running_daemon,
    wait_all_exec,
    workers_config,
    write_results,
)

SLEEP = "/usr/bin/sleep"
MIB = 1024 * 1024


def schedstat_ns(pid: int) -> dict[int, int]:
    """tid -> nanoseconds spent on a CPU (first field of /proc/PID/task/TID/schedstat)."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                result[int(tid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return result


def delta(before: dict[int, int], after: dict[int, int]) -> int:
    """Growth of a per-thread counter; a thread born in the window counts from zero."""
    return sum(value - before.get(tid, 0) for tid, value in after.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=100, help="supervised sleep workers (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window (default 10)")
    parser.add_argument("--settle", type=float, default=1.0, help="quiet time before the window (default 1)")
    parser.add_argument("--out", help="JSON output (default bench/results/idle_cost.json)")
    args = parser.parse_args()
    busy_start = contention()

    config = workers_config(args.children, [SLEEP, "100000"])
    with running_daemon(config) as daemon:
        dpid = daemon_pid(daemon)
        proc = psutil.Process(dpid)
        pids_before = wait_all_exec(daemon, "sleep", args.children)
        time.sleep(args.settle)

        cpu0, sched0, csw0 = proc.cpu_times(), schedstat_ns(dpid), context_switches(dpid)
        t0 = time.perf_counter()
        time.sleep(args.seconds)
        wall = time.perf_counter() - t0
        cpu1, sched1, csw1 = proc.cpu_times(), schedstat_ns(dpid), context_switches(dpid)
        mem = proc.memory_full_info()
        threads = proc.num_threads()
        fds = proc.num_fds()

        pids_after = wait_all_exec(daemon, "sleep", args.children)  # after the window: may wake the daemon
        restarts = sum(1 for name, pid in pids_before.items() if pids_after.get(name) != pid)

    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    sched_s = delta(sched0, sched1) / 1e9
    voluntary = delta({t: v for t, (v, _) in csw0.items()}, {t: v for t, (v, _) in csw1.items()})
    involuntary = delta({t: n for t, (_, n) in csw0.items()}, {t: n for t, (_, n) in csw1.items()})
    result = {
        "cpu_percent_psutil": round(100 * cpu_s / wall, 4),
        "cpu_percent_schedstat": round(100 * sched_s / wall, 4),
        "cpu_seconds_schedstat": round(sched_s, 6),
        "rss_mib": round(mem.rss / MIB, 2),
        "uss_mib": round(mem.uss / MIB, 2),
        "wakeups_per_s": round((voluntary + involuntary) / wall, 3),
        "voluntary_switches": voluntary,
        "nonvoluntary_switches": involuntary,
        "threads": threads,
        "fds": fds,
        "restarts_during_window": restarts,
    }
    data = {
        "benchmark": "idle_cost",
        "machine": machine(),
        "code": code_version(),
        "contention": {"start": busy_start, "end": contention()},
        "params": {"children": args.children, "seconds": args.seconds, "settle_s": args.settle},
        "wall_s": round(wall, 3),
        "result": result,
    }
    out = write_results("idle_cost", data, args.out)

    print(f"idle cost: {args.children} sleep children, {wall:.1f} s window; "
          f"{data['machine']['nproc']} CPUs, {data['machine']['cpu_model']}; "
          f"load {busy_start['loadavg'][0]}, CPU pressure {busy_start['cpu_pressure_some_avg10']}%")
    print_table(["metric", "value"], [
        ["CPU % (psutil cpu_times, 10 ms ticks)", result["cpu_percent_psutil"]],
        ["CPU % (schedstat, ns)", result["cpu_percent_schedstat"]],
        ["RSS MiB", result["rss_mib"]],
        ["USS MiB", result["uss_mib"]],
        ["wake-ups/s (all threads)", result["wakeups_per_s"]],
        ["threads", threads],
        ["restarts during window", restarts],
    ])
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
