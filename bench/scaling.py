"""How Foundation's costs grow, drawn: children 10 to 10,000, and 1 to 100 agents passing messages. PNGs in docs/.

    .venv/bin/python bench/scaling.py [--children 10,100,1000,10000] [--agents 1,10,100] [--peers circus,supervisord]
    .venv/bin/python bench/scaling.py --render bench/results/scaling.json      # redraw the pictures only

Children (N copies of ``sleep``; Foundation, and each peer up to --peer-max children): launch until all N have
exec'd sleep; ``status`` p50 over --requests requests (circus ``list``, supervisord ``getAllProcessInfo``: what
bench/compare.py asks); after --idle s left alone, the daemon's RSS, CPU and wake-ups per second; and, Foundation
only, the p50 of --kills restarts of a SIGKILLed child (until the replacement has exec'd sleep).

Past what this machine's descriptor limit lets a supervisor run (RLIMIT_NOFILE; Foundation holds three per child:
a pidfd and two output pipes), the rest of the N are children attached one by one once the others run, that ran
``/bin/true`` once and exited (``temporary``): in the tree and in every ``status``, holding nothing. The table and the
picture say how many ran.

Agents (Foundation only): a ring of A agents (bench/ring.py) and a sink; --tokens tokens of --hops hops, started at
agents spread around the ring, pipelined through the control socket; every hop is a durable send from one agent to
the next. Messages a second between agents (first send until the sink has counted every token), and the latency of
one hop (one token at a time, its time through all hops / hops).

Writes bench/results/scaling.json and docs/scaling-children.png, docs/scaling-agents.png (matplotlib, from pyproject's
``bench`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.anchors import TARGETS, Target, become_subreaper, launch
from bench.common import contention, context_switches, machine, percentile, write_results
from bench.idle_cost import schedstat_ns
from bench.restart_latency import one_restart

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
FDS_PER_CHILD = 3  # Foundation: pidfd, stdout pipe, stderr pipe
FD_RESERVE = 1000  # the daemon's own: sockets, LMDB, epoll, log files, and the control client's


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def runnable_children() -> int:
    """How many children a Foundation daemon can run here: its soft descriptor limit, raised to the hard one."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    return (limit - FD_RESERVE) // FDS_PER_CHILD // 1000 * 1000  # a round number, with room for a restart's pipes


# ---- children ----


def measure_children(target: Target, n: int, running: int, args: argparse.Namespace) -> dict[str, Any]:
    exited = n - running
    with launch(target, running, restart_heavy=True) as run:
        first, everyone = run.wait_sleepers(running, timeout=600)
        client = run.connect_when_ready(60)
        try:
            for i in range(exited):  # one at a time: each is reaped, and its descriptors closed, before the next
                client.raw.request("attach", parent="root",
                                   spec={"name": f"done{i}", "command": ["/bin/true"], "restart": "temporary"})
            if exited:
                _until(lambda: _stopped(client.raw) >= exited, 120, "attached children exited")
            time.sleep(args.settle)
            for _ in range(3):
                client.status()
            times: list[float] = []
            t_start = time.monotonic()
            for i in range(args.requests):
                if i >= 5 and time.monotonic() - t_start > args.control_budget:
                    break
                t0 = time.perf_counter()
                client.status()
                times.append(time.perf_counter() - t0)
        finally:
            client.close()
        time.sleep(args.idle_settle)
        proc = psutil.Process(run.pid)
        sched0, csw0, t0 = schedstat_ns(run.pid), context_switches(run.pid), time.perf_counter()
        time.sleep(args.idle)
        wall = time.perf_counter() - t0
        sched1, csw1 = schedstat_ns(run.pid), context_switches(run.pid)
        mem = proc.memory_full_info()
        restart = None
        if target.kind == "foundation" and args.kills:
            order = sorted(run.sleepers())
            samples = []
            for _ in range(args.kills + 1):
                r = one_restart(run.pid, order.pop(0), 0.0005)
                order.append(r["new_pid"])
                _until(lambda: len(run.sleepers()) >= running, 60, "all running again")
                samples.append(r["exec_s"])
                time.sleep(0.02)
            restart = round(percentile(samples[1:], 50) * 1000, 3)
    wakes = sum(v + w for v, w in csw1.values()) - sum(v + w for t, (v, w) in csw0.items() if t in csw1)
    return {
        "n": n, "running": running, "exited": exited,
        "cold_all_s": round(everyone, 4), "cold_first_s": round(first, 4),
        "status_p50_ms": round(percentile([t * 1000 for t in times], 50), 3),
        "status_p95_ms": round(percentile([t * 1000 for t in times], 95), 3), "status_n": len(times),
        "idle_cpu_percent": round(100 * (sum(sched1.values()) - sum(sched0.get(t, 0) for t in sched1)) / 1e9 / wall, 4),
        "idle_wakeups_per_s": round(wakes / wall, 2),
        "rss_mib": round(mem.rss / MIB, 1), "uss_mib": round(mem.uss / MIB, 1),
        "restart_p50_ms": restart, "leftovers": run.leftovers,
    }


def _stopped(client: Any) -> int:
    """Children that have run and exited (a child not started yet is "stopped" too, with no last exit)."""
    return sum(1 for c in client.request("status")["tree"]["children"] if c["state"] == "stopped" and c["last_exit"])


def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(0.005)


# ---- agents passing messages ----


def ring_config(agents: int) -> str:
    lines = ["[supervisor]", 'strategy = "one_for_one"', "intensity = 100", "period = 1.0", "",
             "[[supervisor.children]]", 'name = "sink"', 'agent = "agents.examples.counter:Counter"', ""]
    for i in range(agents):
        lines += ["[[supervisor.children]]", f'name = "ring{i}"', 'agent = "bench.ring:Ring"',
                  f"working_dir = {json.dumps(str(REPO))}", f'env = {{ RING_SIZE = "{agents}" }}', ""]
    return "\n".join(lines)


def measure_ring(agents: int, args: argparse.Namespace) -> dict[str, Any]:
    target = next(t for t in TARGETS if t.kind == "foundation")
    with launch(target, 0, config=ring_config(agents)) as run:
        client = run.connect_when_ready(60).raw
        try:
            _until(lambda: sum(1 for c in client.request("status")["tree"]["children"] if c["state"] == "running")
                   >= agents + 1, 300, f"{agents} ring agents running")
            sink = lambda: client.request("call", name="sink", body={"get": True})["reply"]["count"]  # noqa: E731
            # one token at a time: the latency of a hop
            hop = []
            for i in range(args.hop_samples + 1):
                before = sink()
                t0 = time.perf_counter()
                client.request("send", name=f"ring{i % agents}", body={"hops": args.hops})
                _until(lambda b=before: sink() > b, 60, "a token through the ring")
                if i:
                    hop.append((time.perf_counter() - t0) / (args.hops + 1))
            # many tokens at once: messages between agents a second
            before = sink()
            t0 = time.perf_counter()
            _pipelined(str(run.tmp / "run" / "control.sock"),
                       [(f"ring{(i * 7919) % agents}", {"hops": args.hops}) for i in range(args.tokens)])
            _until(lambda: sink() >= before + args.tokens, 600, "every token through the ring")
            wall = time.perf_counter() - t0
        finally:
            client.close()
    messages = args.tokens * (args.hops + 1)
    return {"agents": agents, "tokens": args.tokens, "hops": args.hops, "messages": messages,
            "wall_s": round(wall, 3), "msgs_per_s": round(messages / wall, 1),
            "hop_p50_ms": round(percentile([h * 1000 for h in hop], 50), 3), "leftovers": run.leftovers}


def _pipelined(path: str, sends: list[tuple[str, Any]], window: int = 256) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(120)
    try:
        nxt = done = 0
        buf = b""
        while done < len(sends):
            batch = []
            while nxt < len(sends) and nxt - done < window:
                name, body = sends[nxt]
                batch.append(orjson.dumps({"id": nxt, "verb": "send", "args": {"name": name, "body": body}}) + b"\n")
                nxt += 1
            if batch:
                s.sendall(b"".join(batch))
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("daemon closed the control connection")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not orjson.loads(line).get("ok", True):
                    raise RuntimeError(f"send refused: {line[:200]!r}")
                done += 1
    finally:
        s.close()


# ---- pictures ----


def draw(data: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415  (the bench extra; only needed to draw)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    children = data["results"].get("children", {})
    if children:
        fig, axes = plt.subplots(2, 2, figsize=(11, 8))
        panels = [("cold_all_s", "cold start: launch -> all running (s)"),
                  ("status_p50_ms", "`status` p50 (ms)"),
                  ("rss_mib", "daemon RSS, idle (MiB)"),
                  ("restart_p50_ms", "restart of one SIGKILLed child, p50 (ms)")]
        for ax, (key, title) in zip(axes.flat, panels, strict=True):
            for name, points in children.items():
                pts = [(p["n"], p[key]) for p in points if p.get(key) is not None]
                if not pts:
                    continue
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
                for p in points:
                    if p.get("exited") and p.get(key) is not None:
                        ax.annotate(f"{p['running']:,} running\n+{p['exited']:,} exited", (p["n"], p[key]),
                                    fontsize=7, textcoords="offset points", xytext=(-60, 8))
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("children")
            ax.set_title(title, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Children: Foundation, circus and supervisord (defaults), {data['machine']['nproc']} CPUs, "
                     f"{data['machine']['date'][:10]}", fontsize=11)
        fig.tight_layout()
        path = out_dir / "scaling-children.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    ring = data["results"].get("agents", [])
    if ring:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        xs = [r["agents"] for r in ring]
        a1.plot(xs, [r["msgs_per_s"] for r in ring], marker="o", color="C0")
        a1.set_title("durable messages between agents a second", fontsize=10)
        a2.plot(xs, [r["hop_p50_ms"] for r in ring], marker="o", color="C1")
        a2.set_title("one hop, agent to agent, p50 (ms)", fontsize=10)
        for ax in (a1, a2):
            ax.set_xscale("log")
            ax.set_xlabel("agents in the ring")
            ax.set_ylim(bottom=0)
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle(f"Agents passing tokens around a ring (bench/ring.py), {ring[0]['hops']} hops a token, "
                     f"{data['machine']['date'][:10]}", fontsize=11)
        fig.tight_layout()
        path = out_dir / "scaling-agents.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def print_tables(data: dict[str, Any]) -> None:
    children = data["results"].get("children", {})
    if children:
        print("children   target      running  cold s  status p50 ms  idle CPU %  wake-ups/s  RSS MiB  restart p50 ms")
        for name, points in children.items():
            for p in points:
                print(f"{p['n']:>8}   {name:<10} {p['running']:>8}  {p['cold_all_s']:>6}  {p['status_p50_ms']:>13}  "
                      f"{p['idle_cpu_percent']:>10}  {p['idle_wakeups_per_s']:>10}  {p['rss_mib']:>7}  "
                      f"{p['restart_p50_ms'] if p['restart_p50_ms'] is not None else '-':>14}")
    ring = data["results"].get("agents", [])
    if ring:
        print("\nagents  messages  msgs/s  hop p50 ms")
        for r in ring:
            print(f"{r['agents']:>6}  {r['messages']:>8}  {r['msgs_per_s']:>6}  {r['hop_p50_ms']:>10}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--children", type=_ints, default=[10, 100, 1000, 10000], help="children counts")
    p.add_argument("--peers", default="circus,supervisord", help="peers on the children curves ('' for none)")
    p.add_argument("--peer-max", type=int, default=1000, help="peers run up to this many children (default 1000)")
    p.add_argument("--agents", type=_ints, default=[1, 10, 100], help="ring sizes (default 1,10,100)")
    p.add_argument("--tokens", type=int, default=200, help="ring: tokens at once (default 200)")
    p.add_argument("--hops", type=int, default=9, help="ring: hops a token makes (default 9)")
    p.add_argument("--hop-samples", type=int, default=10, help="ring: tokens sent one at a time (default 10)")
    p.add_argument("--requests", type=int, default=50, help="status requests per point (default 50)")
    p.add_argument("--control-budget", type=float, default=10.0, help="s of status requests at most (default 10)")
    p.add_argument("--kills", type=int, default=10, help="Foundation: restarts per point (default 10; 0: none)")
    p.add_argument("--idle", type=float, default=5.0, help="idle window, s (default 5)")
    p.add_argument("--idle-settle", type=float, default=1.0, help="before the idle window, s (default 1)")
    p.add_argument("--settle", type=float, default=1.0, help="after all children run, s (default 1)")
    p.add_argument("--out-dir", default=str(REPO / "docs"), help="where the PNGs go (default docs/)")
    p.add_argument("--json", help="results file (default bench/results/scaling.json)")
    p.add_argument("--render", metavar="JSON", help="measure nothing: draw the pictures of a saved run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        print_tables(data)
        for path in draw(data, Path(args.out_dir)):
            print(f"picture: {path}")
        return 0
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    become_subreaper()
    random.seed(1)
    cap = runnable_children()
    peers = [t for t in TARGETS if t.key in {x for x in args.peers.split(",") if x}]
    foundation = next(t for t in TARGETS if t.kind == "foundation")
    results: dict[str, Any] = {"children": {}, "agents": []}
    load: list[dict[str, Any]] = []
    info = machine()
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    _log(f"command: {command}; this machine runs at most {cap} children at {FDS_PER_CHILD} descriptors each")
    try:
        for n in args.children:
            for target in [foundation, *peers]:
                if target is not foundation and n > args.peer_max:
                    continue
                running = min(n, cap) if target is foundation else n
                load.append({"what": f"{target.key} {n}", "before": contention()})
                r = measure_children(target, n, running, args)
                results["children"].setdefault(target.key, []).append(r)
                _log(f"{target.key} {n} ({running} running): cold {r['cold_all_s']} s, status p50 "
                     f"{r['status_p50_ms']} ms, idle {r['idle_cpu_percent']} % {r['idle_wakeups_per_s']} wake-ups/s, "
                     f"RSS {r['rss_mib']} MiB, restart p50 {r['restart_p50_ms']} ms")
        for a in args.agents:
            load.append({"what": f"ring {a}", "before": contention()})
            r = measure_ring(a, args)
            results["agents"].append(r)
            _log(f"ring of {a}: {r['msgs_per_s']} msgs/s, hop p50 {r['hop_p50_ms']} ms")
    finally:
        data = {"benchmark": "scaling", "machine": info, "command": command, "params": vars(args),
                "descriptor_cap_children": cap, "load": load, "results": results}
        out = write_results("scaling", data, args.json)
    print(f"machine: nproc={info['nproc']}, {info['cpu_model']}, kernel {info['kernel']}; {info['date']}")
    print(f"command: {command}")
    print_tables(data)
    for path in draw(data, Path(args.out_dir)):
        print(f"picture: {path}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
