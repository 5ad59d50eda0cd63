"""Durable commit latency of a ~1 KB agent state: one LMDB environment per agent vs one shared environment.

Each writer is a separate process (spawned with subprocess, so no LMDB environment crosses a fork) that opens its
store, says ready, waits for "go", commits ``--warmup`` untimed then ``--commits`` timed states in a tight loop and
reports its latencies. All writers of a run start together. Layouts:

* ``per-agent``  — ``<dir>/agents/w<i>/``: own environment, own writer mutex, own fsyncs (raw py-lmdb, same flags
  and the same three puts as agents.state.StateStore.commit);
* ``shared``     — ``<dir>/shared/`` with a named db per writer: all writers queue on LMDB's single writer mutex;
* ``store``      — per-agent through the real ``agents.state.StateStore`` (checks the class adds nothing);
* reference variants, not durable the same way: ``per-agent-writemap`` (writemap=True, msync instead of pwrite),
  ``per-agent-nometasync`` (metasync=False: one fsync per commit, last commit may be lost on power failure),
  ``per-agent-nosync`` (sync=False: no fsync at all, the price of durability).

Usage::

    python bench/state_commit.py                                   # per-agent, shared, store; 1 and 4 writers
    python bench/state_commit.py --dir /tmp --dir /work/main/bench/results --writers 1,4,8 \\
        --layouts per-agent,shared,store,per-agent-writemap,per-agent-nometasync,per-agent-nosync

Every configuration runs ``--repeat`` times, interleaved; the table shows medians over the rounds and the range
of p99, because fsync latency on a shared VM swings with whatever else the host does. The script measures; it
asserts nothing. Results: a table on stdout and JSON in bench/results/state_commit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lmdb  # noqa: E402
import orjson  # noqa: E402

from agents.state import FORMAT, StateStore  # noqa: E402
from bench.common import machine, percentile, print_table, write_results  # noqa: E402

LAYOUTS = ["per-agent", "shared", "store", "per-agent-writemap", "per-agent-nometasync", "per-agent-nosync"]
MAP_SIZE = 16 << 20


# ---- worker (one process per writer) ----


def _open(layout: str, base: Path, index: int) -> tuple[Any, Any]:
    """(committer, closer) for this writer: committer(payload_bytes, seq) does one durable commit."""
    if layout == "store":
        store = StateStore(base / "agents" / f"w{index}", map_size=MAP_SIZE)
        return store.commit, store.close
    flags = dict(StateStore._OPEN_FLAGS)
    if layout == "shared":
        flags["max_dbs"] = 64
        path = base / "shared"
    else:
        path = base / "agents" / f"w{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "per-agent-writemap":
        flags["writemap"] = True
    elif layout == "per-agent-nometasync":
        flags["metasync"] = False
    elif layout == "per-agent-nosync":
        flags["sync"] = flags["metasync"] = False
    env = lmdb.open(str(path), map_size=MAP_SIZE, **flags)
    env.reader_check()
    db = env.open_db(f"w{index}".encode()) if layout == "shared" else None

    def commit(state: Any, seq: int) -> None:  # what StateStore.commit does, minus argument checks
        payload = orjson.dumps(state)
        with env.begin(write=True, db=db) as txn:
            txn.put(b"state", payload)
            txn.put(b"last_seq", seq.to_bytes(8, "big"))
            txn.put(b"format", FORMAT)

    return commit, env.close


def worker(spec: dict[str, Any]) -> None:
    commit, close = _open(spec["layout"], Path(spec["dir"]), spec["index"])
    pad = "x" * spec["pad"]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    seq = 0
    for _ in range(spec["warmup"]):
        seq += 1
        commit({"n": seq, "pad": pad}, seq)
    latencies = []
    t0 = time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide: comparable across the writer processes
    for _ in range(spec["commits"]):
        seq += 1
        state = {"n": seq, "pad": pad}
        start = time.perf_counter_ns()
        commit(state, seq)
        latencies.append(time.perf_counter_ns() - start)
    t1 = time.monotonic_ns()
    close()
    print(json.dumps({"lat_ns": latencies, "t0": t0, "t1": t1}), flush=True)


# ---- driver ----


def run_one(layout: str, writers: int, base_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="state-commit-", dir=base_dir))
    pad = max(0, args.size - len(orjson.dumps({"n": 100000, "pad": ""})))
    procs = []
    try:
        for index in range(writers):
            spec = {"layout": layout, "dir": str(tmp), "index": index, "commits": args.commits,
                    "warmup": args.warmup, "pad": pad}
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"writer failed to start ({layout}): {line!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"writer exited with {proc.returncode} ({layout})")
            reports.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    ms = [ns / 1e6 for report in reports for ns in report["lat_ns"]]
    wall = (max(r["t1"] for r in reports) - min(r["t0"] for r in reports)) / 1e9
    return {
        "dir": base_dir,
        "fs": filesystem(base_dir),
        "layout": layout,
        "writers": writers,
        "commits": len(ms),
        "state_bytes": len(orjson.dumps({"n": 100000, "pad": "x" * pad})),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "commits_per_s": round(len(ms) / wall, 1),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of one configuration."""
    first = results[0]
    return {
        **{key: first[key] for key in ("dir", "fs", "layout", "writers", "state_bytes")},
        "rounds": len(results),
        "commits": sum(r["commits"] for r in results),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in results), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in results), 3),
        "p99_min_ms": min(r["p99_ms"] for r in results),
        "p99_max_ms": max(r["p99_ms"] for r in results),
        "max_ms": max(r["max_ms"] for r in results),
        "commits_per_s": round(statistics.median(r["commits_per_s"] for r in results), 1),
    }


def filesystem(path: str) -> str:
    """'fstype device' of the mount holding ``path`` (longest matching mount point in /proc/mounts)."""
    real = os.path.realpath(path)
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, fstype, device)
    return f"{best[1]} {best[2]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--commits", type=int, default=2000, help="timed commits per writer (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed commits per writer first (default 100)")
    parser.add_argument("--size", type=int, default=1024, help="encoded state size in bytes (default 1024)")
    parser.add_argument("--writers", default="1,4", help="comma-separated writer counts (default 1,4)")
    parser.add_argument("--layouts", default="per-agent,shared,store",
                        help=f"comma-separated, from {','.join(LAYOUTS)} (default per-agent,shared,store)")
    parser.add_argument("--dir", action="append", help="directory to put the stores under (repeatable; "
                        "default the system temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all configurations (default 3)")
    parser.add_argument("--json", help="results file (default bench/results/state_commit.json)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    layouts = args.layouts.split(",")
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layouts: {sorted(unknown)}")
    writer_counts = [int(n) for n in args.writers.split(",")]
    dirs = args.dir or [tempfile.gettempdir()]
    for d in dirs:
        Path(d).mkdir(parents=True, exist_ok=True)

    info = machine()
    print(f"machine: nproc={info['nproc']} cpu={info['cpu_model']!r} kernel={info['kernel']} "
          f"python={info['python']} lmdb={lmdb.version()} py-lmdb={lmdb.__version__}")
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    load_before = os.getloadavg()
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    # Rounds interleave every configuration, so a burst of noise from the host spreads over all of them.
    for round_no in range(args.repeat):
        for base in dirs:
            for writers in writer_counts:
                for layout in layouts:
                    runs.setdefault((base, writers, layout), []).append(run_one(layout, writers, base, args))
                    print(f"  round {round_no + 1}: {base} {layout} x{writers}", file=sys.stderr)
    load_after = os.getloadavg()
    rows = [summarise(results) for results in runs.values()]
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(anything else running on the machine shows up in p99)")
    print(f"{args.repeat} round(s); p50, p99, commits/s: median over rounds; p99 range: min-max over rounds; "
          "max: worst single commit\n")
    headers = ["dir", "fs", "layout", "writers", "commits", "p50_ms", "p99_ms", "p99_range", "max_ms", "commits/s"]
    print_table(headers, [[r["dir"], r["fs"], r["layout"], r["writers"], r["commits"], r["p50_ms"], r["p99_ms"],
                           f"{r['p99_min_ms']:.3f}-{r['p99_max_ms']:.3f}", r["max_ms"], r["commits_per_s"]]
                          for r in rows])
    out = write_results("state_commit", {"machine": info, "argv": sys.argv, "lmdb": list(lmdb.version()),
                                         "loadavg_before": load_before, "loadavg_after": load_after,
                                         "results": rows, "rounds": [r for v in runs.values() for r in v]},
                        args.json)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
