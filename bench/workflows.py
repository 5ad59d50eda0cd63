"""Durable workflows: what one step costs, a 3-step workflow end to end, and many workflows at once.

Measured through the control socket as a client would: one request ``workflow run`` with ``wait`` (answered with the
summary once the workflow has finished), as a Restate client's call of a workflow handler waits for its result:

* ``1 step python``  — a workflow of one ``python`` no-op step: run (handed by the daemon to a workflow host,
  ``wfhost-1``), its record committed, the step dispatched to a task agent, run, its result cast back and
  committed, and the answer;
* ``1 step command`` — the same with ``command = ["/bin/true"]`` (run by the daemon's task supervisor);
* ``3 steps python`` / ``3 steps command`` — three such steps in sequence (DESIGN 6's comparison workflow);
* ``3 steps python, --id`` / ``3 steps inline, --id`` — with an id given: the coordinator starts a process of its
  own for the workflow (DESIGN 3.6's process per workflow), as all runs did before workflow hosts;
* ``1 step inline`` / ``3 steps inline`` — ``python`` steps with ``args.inline``: run by the workflow's own process
  (as Restate's ``ctx.run`` and DBOS's steps run in the application's), one fsync a step;
* ``step overhead``  — inside the workflow: from a step's dispatch to its result committed (``duration_s``);
* ``... idempotent``  — inline steps marked ``idempotent``: the peers' promise (a step runs again if its process
  died before its result was recorded), no durable intent before each step;
* ``concurrent``     — N workflows of 3 idempotent inline steps (as the peers' steps run: in the workflow's process,
  at least once), run and waited for with up to 100 in flight on one connection (pipelined requests; Restate's client
  keeps 100 connections), until the last has finished: wall time, workflows/s, and the memory (USS) of foundationd
  and everything under it at the peak; ``concurrent, intents`` the same with an intent committed before each step;
  ``concurrent, task agents`` with the steps run by task agents;
* ``floor``          — one durable LMDB commit of a small state in the same run, the physical floor of a checkpoint.

With ``--peers`` the same workflows on DBOS Transact and Restate (bench/workflow_peers.py) run in the same sitting.
The script measures; it asserts nothing. Results: a table on stdout, JSON in bench/results/workflows.json.

    python bench/workflows.py [--runs 200] [--concurrent 1000] [--peers]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from agents.state import StateStore  # noqa: E402
from bench.common import machine, percentile, print_table, running_daemon, write_results  # noqa: E402

CONFIG = """
[supervisor]
intensity = 1000
period = 1
[workflows]
task_agents = 2
monitor = false
"""

NOOP = {"action": "python", "args": {"function": "agents.workflow.examples:noop"}}
INLINE = {"action": "python", "args": {"function": "agents.workflow.examples:noop", "inline": True}}
# The peers' promise for a step: at least once (DBOS and Restate run a step again when its process died before its
# result was recorded), which is Foundation's "idempotent": no durable intent before it runs.
INLINE_AGAIN = {**INLINE, "idempotent": True}
TRUE = {"action": "command", "args": {"command": ["/bin/true"]}}
WINDOW = 100  # workflows in flight in the concurrent measure (Restate's client: 100 connections)


def flow(kind: dict[str, Any], steps: int) -> dict[str, Any]:
    tasks = [{"task": {"id": f"s{i}", **kind}} for i in range(steps)]
    return tasks[0] if steps == 1 else {"sequential": tasks}


def run_once(client: Any, definition: dict[str, Any], wf_id: str | None) -> tuple[float, list[float]]:
    """One workflow, run and waited for in one request: with ``wf_id`` a process is started for it; without, a
    workflow host runs it."""
    began = time.perf_counter()
    summary = client.request("workflow", op="run", definition=definition, wait=60,
                             **({"id": wf_id} if wf_id else {}))
    wf_id = summary["id"]
    took = time.perf_counter() - began
    if summary["state"] != "completed":
        raise RuntimeError(f"workflow {wf_id} ended {summary['state']}: {summary}")
    return took, [s["duration_s"] for s in summary["steps"]]


def measure(daemon: Any, name: str, definition: dict[str, Any], runs: int, *, warmup: int = 10,
            own_process: bool = False) -> dict[str, Any]:
    totals, steps = [], []
    with daemon.client(timeout=120) as client:
        for i in range(warmup + runs):
            took, durations = run_once(client, definition, f"{name}-{i}" if own_process else None)
            if i >= warmup:
                totals.append(took)
                steps.extend(durations)
    return {"p50_ms": percentile(totals, 50) * 1000, "p99_ms": percentile(totals, 99) * 1000,
            "step_p50_ms": percentile(steps, 50) * 1000, "step_p99_ms": percentile(steps, 99) * 1000}


def concurrent(daemon: Any, count: int, kind: dict[str, Any]) -> dict[str, Any]:
    """``count`` 3-step workflows started back to back; wall time until all have finished, and peak memory."""
    root = psutil.Process(daemon.proc.pid)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            total = 0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    total += proc.memory_full_info().uss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    with daemon.client(timeout=600) as client:  # up to WINDOW unanswered, as the peers' clients keep 100 in flight
        runs = (("workflow", {"op": "run", "definition": flow(kind, 3), "wait": 600}) for _ in range(count))
        for summary in client.pipeline(runs, window=WINDOW):
            if isinstance(summary, Exception) or summary["state"] != "completed":
                raise RuntimeError(f"a workflow did not complete: {summary}")
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
    return {"count": count, "wall_s": wall, "per_s": count / wall, "peak_uss_mib": peak[0]}


def commit_floor(runs: int = 200) -> float:
    with tempfile.TemporaryDirectory() as tmp, StateStore(Path(tmp) / "s") as store:
        samples = []
        for i in range(runs):
            began = time.perf_counter()
            store.commit({"steps": {"a": {"state": "done", "attempts": 1, "result": i}}}, i + 1)
            samples.append(time.perf_counter() - began)
    return percentile(samples, 50) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--peers", action="store_true", help="also DBOS Transact and Restate (bench/workflow_peers.py)")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "floor_commit_p50_ms": commit_floor()}
    with running_daemon(CONFIG) as daemon:
        for name, definition in (("1 step python", flow(NOOP, 1)), ("1 step command", flow(TRUE, 1)),
                                 ("3 steps python", flow(NOOP, 3)), ("3 steps command", flow(TRUE, 3))):
            results[name] = measure(daemon, name.replace(" ", "-"), definition, args.runs)
        results["1 step inline"] = measure(daemon, "i1", flow(INLINE, 1), args.runs)
        results["3 steps inline"] = measure(daemon, "i3", flow(INLINE, 3), args.runs)
        results["1 step inline, idempotent"] = measure(daemon, "a1", flow(INLINE_AGAIN, 1), args.runs)
        results["3 steps inline, idempotent"] = measure(daemon, "a3", flow(INLINE_AGAIN, 3), args.runs)
        results["3 steps python, --id"] = measure(daemon, "own", flow(NOOP, 3), args.runs, own_process=True)
        results["3 steps inline, --id"] = measure(daemon, "own-i", flow(INLINE, 3), args.runs, own_process=True)
        if args.concurrent:
            results["concurrent"] = concurrent(daemon, args.concurrent, INLINE_AGAIN)
            results["concurrent, intents"] = concurrent(daemon, args.concurrent, INLINE)
            results["concurrent, task agents"] = concurrent(daemon, args.concurrent, NOOP)
    rows = [[name, r["p50_ms"], r["p99_ms"], r["step_p50_ms"], r["step_p99_ms"]]
            for name, r in results.items() if isinstance(r, dict) and "p50_ms" in r]
    if args.peers:
        from bench import workflow_peers  # noqa: PLC0415  (only with --peers: it installs and starts servers)

        for peer, fn in (("DBOS", "measure_dbos"), ("Restate", "measure_restate")):
            try:
                got = getattr(workflow_peers, fn)(args.runs, concurrent=args.concurrent or 1)
            except Exception as exc:
                print(f"{peer}: not measured: {exc}", file=sys.stderr)
                continue
            results[peer] = got
            rows.append([f"{peer} 1 step", got.get("step_p50_ms"), got.get("step_p99_ms"), None, None])
            rows.append([f"{peer} 3 steps", got.get("wf3_p50_ms"), got.get("wf3_p99_ms"), None, None])
            if args.concurrent:
                print(f"{peer} concurrent: {got.get('concurrent_n')} workflows of 3 steps in "
                      f"{got.get('concurrent_s', 0):.2f} s ({got.get('concurrent_per_s', 0):.0f}/s)")
    print_table(["workflow", "p50 ms", "p99 ms", "step p50 ms", "step p99 ms"], rows)
    print(f"floor: one durable LMDB commit p50 {results['floor_commit_p50_ms']:.3f} ms")
    for name in ("concurrent", "concurrent, intents", "concurrent, task agents"):
        if name in results:
            c = results[name]
            print(f"{name}: {c['count']} workflows of 3 steps in {c['wall_s']:.2f} s ({c['per_s']:.0f}/s), "
                  f"peak USS {c['peak_uss_mib']:.0f} MiB")
    print(f"results: {write_results('workflows', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
