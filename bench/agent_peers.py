"""Foundation's Python agents side by side with Ray actors, on this machine, in one run.

    .venv/bin/python bench/agent_peers.py [--only foundation,ray] [--calls 200] [--kills 20] [--n 10,100]

The same agent on both: a counter (``add`` a number, ``get`` the count), Foundation's
``agents.examples.counter:Counter`` under a foundationd, and a Ray actor class with the same two methods. Per
side, measured in this order:

  call_p50_ms / call_p99_ms    one ``get`` round trip from the harness, one at a time (Foundation: ``call``
                               through the control socket, daemon, broker, agent; Ray: ``ray.get(actor.get.remote())``
                               from the driver through the actor's core worker)
  restart_p50_ms / _p95_ms     SIGKILL of the agent's (actor's) process, until a ``get`` is answered by a new process:
                               the harness calls again every --poll s (Foundation; a call to an agent that is down
                               fails at once) or makes one call that Ray retries itself (``max_task_retries=-1``)
  cold_N_s                     N agents (actors) from nothing until each has answered: Foundation, launch of the
                               daemon until ``status`` shows all N running; Ray, ``ray.init`` until all N have
                               answered a ``get`` (``ray_init_s`` is the part spent in ``ray.init``)
  uss_per_agent_mib_N          mean USS (memory only this process has: psutil's ``memory_full_info().uss``) of the
                               N agent (actor) processes after --settle s idle
  fixed_uss_mib_N              the USS of everything else the side runs for them (foundationd, its zygote, spares and
                               guardian; Ray's GCS, raylet, its other workers and helpers)

Durability is not the same and is said in the table: a Foundation agent's state is committed to LMDB (fsync'd)
before a call is answered and survives the SIGKILL (the counter keeps its count); a Ray actor's state lives in its
process and is lost with it (the restarted actor runs ``__init__`` again). Ray runs with its defaults but for what
a restart needs (``max_restarts=-1``, ``max_task_retries=-1``: by default a killed actor stays dead), the CPUs it
may use (``num_cpus=2``) and no dashboard (``include_dashboard=False``: a web UI, not part of an actor's path).

Ray is installed on demand into this venv (``pip install ray``, not in the ``bench`` extra: ~240 MB); a machine
where it cannot be installed or started gets one line saying why, and the Foundation column is still measured.
Every process either side starts is stopped however the run ends (Ray: ``ray.shutdown()``, then whatever is left
in its session is killed; Foundation: bench/anchors.py's teardown).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.anchors import TARGETS, become_subreaper, launch
from bench.common import contention, machine, percentile, write_results
from ipc.errors import FoundationError

SIDES = ("foundation", "ray")
MIB = 1024 * 1024
RAY_REQUIREMENT = "ray>=2.9"


class PeerUnavailable(RuntimeError):
    """This peer cannot run here; the message says why."""


def _ms(samples: list[float]) -> dict[str, float]:
    v = [s * 1000 for s in samples]
    return {"n": len(v), "p50_ms": round(percentile(v, 50), 3), "p95_ms": round(percentile(v, 95), 3),
            "p99_ms": round(percentile(v, 99), 3), "max_ms": round(max(v), 3)}


def _uss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_full_info().uss)
    except psutil.Error:
        return 0


# ---- Foundation ----


def _counter_name(i: int, n: int) -> str:
    return "counter" if n == 1 else f"counter{i}"


def _foundation_status(client: Any) -> dict[str, Any]:
    return client.request("status")


def _wait_running(run: Any, client: Any, n: int, timeout: float = 300.0) -> tuple[float, dict[str, Any]]:
    """Seconds from launch until ``status`` shows n agents running (polled every 20 ms: a status of many agents costs
    the daemon ms that would delay their hellos)."""
    while True:
        st = _foundation_status(client)
        if sum(1 for w in st["tree"]["children"] if w["state"] == "running") >= n:
            return time.perf_counter() - run.launched, st
        if time.perf_counter() - run.launched > timeout:
            raise TimeoutError(f"foundation: fewer than {n} agents running after {timeout} s")
        time.sleep(0.02)


def measure_foundation(args: argparse.Namespace) -> dict[str, Any]:
    target = next(t for t in TARGETS if t.kind == "foundation")
    out: dict[str, Any] = {}
    with launch(target, 0, agents=1, restart_heavy=True) as run:
        client = run.connect_when_ready().raw
        try:
            _wait_running(run, client, 1)
            for _ in range(20):
                client.request("call", name="counter", body={"get": True})
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                client.request("call", name="counter", body={"get": True})
                times.append(time.perf_counter() - t0)
            out["call"] = _ms(times)
            _log(f"foundation: call p50 {out['call']['p50_ms']} ms")
            out["restart"] = _ms(_foundation_restarts(client, args))
            _log(f"foundation: restart -> answered p50 {out['restart']['p50_ms']} ms")
        finally:
            client.close()
    for n in args.n:
        with launch(target, 0, agents=n) as run:
            client = run.connect_when_ready(60).raw
            try:
                cold, st = _wait_running(run, client, n)
                time.sleep(args.settle)
                st = _foundation_status(client)
            finally:
                client.close()
            agents = [w["pid"] for w in st["tree"]["children"] if w.get("pid")]
            ours = set(agents)
            everything = [run.pid, *(p.pid for p in psutil.Process(run.pid).children(recursive=True))]
            per = [_uss(p) for p in agents]
            fixed = sum(_uss(p) for p in everything if p not in ours)
        out[f"cold_{n}_s"] = round(cold, 3)
        out[f"uss_per_agent_mib_{n}"] = round(sum(per) / len(per) / MIB, 2)
        out[f"fixed_uss_mib_{n}"] = round(fixed / MIB, 1)
        _log(f"foundation: {n} agents: cold {cold:.3f} s, USS {out[f'uss_per_agent_mib_{n}']} MiB each, "
             f"fixed {out[f'fixed_uss_mib_{n}']} MiB")
    out["settings"] = "foundationd defaults; agents.examples.counter:Counter; state in LMDB, fsync'd, kept on restart"
    return out


def _foundation_restarts(client: Any, args: argparse.Namespace) -> list[float]:
    samples = []
    for i in range(args.kills + 1):
        old = next(w["pid"] for w in _foundation_status(client)["tree"]["children"] if w["name"] == "counter")
        t0 = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        while True:
            try:
                client.request("call", name="counter", body={"get": True}, timeout=5.0)
                node = next(w for w in _foundation_status(client)["tree"]["children"] if w["name"] == "counter")
                if node["pid"] != old:
                    break
            except FoundationError:
                pass
            if time.perf_counter() - t0 > 30:
                raise TimeoutError("foundation: the counter did not answer within 30 s of its SIGKILL")
            time.sleep(args.poll)
        if i:  # the first one warms up
            samples.append(time.perf_counter() - t0)
        time.sleep(0.05)
    return samples


# ---- Ray ----


def ensure_ray() -> Any:
    """Import ray, pip-installing it into this venv first when it is missing."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        pass
    if sys.prefix == sys.base_prefix:
        raise PeerUnavailable("ray: not installed, and this Python is not a virtualenv (run .venv/bin/python)")
    _log(f"ray: pip install {RAY_REQUIREMENT} (about 240 MB)")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", RAY_REQUIREMENT], check=False)
    if done.returncode != 0:
        raise PeerUnavailable(f"ray: pip install {RAY_REQUIREMENT} failed (status {done.returncode})")
    importlib.invalidate_caches()
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise PeerUnavailable(f"ray: installed but does not import: {exc}") from exc


RAY_ACTOR = '''
import os
import ray

@ray.remote(max_restarts=-1, max_task_retries=-1)
class Counter:
    """The counter agent as a Ray actor: its count lives in the process."""

    def __init__(self):
        self.count = 0

    def add(self, n):
        self.count += n

    def get(self):
        return {"count": self.count, "pid": os.getpid()}
'''


@contextlib.contextmanager
def _ray_session(ray: Any, tmp: Path) -> Any:
    """ray.init in a temporary directory; ray.shutdown and a sweep of its processes however we leave."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    t0 = time.perf_counter()
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp), log_to_driver=False,
                 configure_logging=False)
    except Exception as exc:
        _sweep(before)
        raise PeerUnavailable(f"ray: ray.init failed here: {type(exc).__name__}: {exc}") from exc
    try:
        yield time.perf_counter() - t0
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        _sweep(before)


def _sweep(before: set[int]) -> None:
    """Kill what Ray left of the processes it started in this run (ours: descendants of this harness)."""
    for _ in range(50):
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        if not left:
            return
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=0.2)


def measure_ray(args: argparse.Namespace) -> dict[str, Any]:
    ray = ensure_ray()
    out: dict[str, Any] = {"version": ray.__version__}
    tmp = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))  # short: Ray's socket paths must fit sun_path
    module = tmp / "bench_ray_counter.py"
    module.write_text(RAY_ACTOR)
    sys.path.insert(0, str(tmp))
    try:
        counter = importlib.import_module("bench_ray_counter").Counter
        with _ray_session(ray, tmp / "r") as init_s:
            out["init_s"] = round(init_s, 3)
            out.update(_ray_one_actor(ray, counter, args))
        for n in args.n:
            if n > args.ray_max:
                out[f"skipped_{n}"] = f"more than --ray-max {args.ray_max} actors (~40 MiB each)"
                _log(f"ray: {n} actors: skipped ({out[f'skipped_{n}']})")
                continue
            out.update(_ray_many(ray, counter, n, tmp / f"r{n}", args))
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("bench_ray_counter", None)
        shutil.rmtree(tmp, ignore_errors=True)
    out["settings"] = (f"ray {out['version']}: ray.init(num_cpus=2, include_dashboard=False); actor "
                       "max_restarts=-1, max_task_retries=-1; state in the process, lost on restart")
    return out


def _ray_one_actor(ray: Any, counter: Any, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    actor = counter.remote()
    for _ in range(20):
        ray.get(actor.get.remote())
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        ray.get(actor.get.remote())
        times.append(time.perf_counter() - t0)
    out["call"] = _ms(times)
    _log(f"ray: call p50 {out['call']['p50_ms']} ms")
    samples = []
    for i in range(args.kills + 1):
        old = ray.get(actor.get.remote())["pid"]
        t0 = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        reply = ray.get(actor.get.remote(), timeout=60)
        if reply["pid"] == old:  # answered before the kill landed: not a restart
            continue
        if i:
            samples.append(time.perf_counter() - t0)
        time.sleep(0.05)
    out["restart"] = _ms(samples)
    _log(f"ray: restart -> answered p50 {out['restart']['p50_ms']} ms")
    ray.kill(actor, no_restart=True)
    return out


def _ray_many(ray: Any, counter: Any, n: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    with _ray_session(ray, tmp) as init_s:
        actors = [counter.remote() for _ in range(n)]
        replies = ray.get([a.get.remote() for a in actors], timeout=args.ray_timeout)
        cold = time.perf_counter() - t0
        time.sleep(args.settle)
        ours = {r["pid"] for r in replies}
        per = [_uss(p) for p in ours]
        others = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in ours]
        fixed = sum(_uss(p) for p in others)
        for a in actors:
            ray.kill(a, no_restart=True)
    out = {f"cold_{n}_s": round(cold, 3), f"ray_init_{n}_s": round(init_s, 3),
           f"uss_per_agent_mib_{n}": round(sum(per) / len(per) / MIB, 2), f"fixed_uss_mib_{n}": round(fixed / MIB, 1)}
    _log(f"ray: {n} actors: cold {cold:.3f} s (init {init_s:.2f}), USS {out[f'uss_per_agent_mib_{n}']} MiB "
         f"each, fixed {out[f'fixed_uss_mib_{n}']} MiB")
    return out


# ---- output ----


def rows(results: dict[str, Any], ns: list[int]) -> list[tuple[str, str]]:
    """(label, key path) of the table's rows."""
    out = [("call round trip p50 ms", "call.p50_ms"), ("call round trip p99 ms", "call.p99_ms"),
           ("restart after SIGKILL -> answered p50 ms", "restart.p50_ms"),
           ("restart after SIGKILL -> answered p95 ms", "restart.p95_ms")]
    for n in ns:
        out += [(f"cold start of {n} -> all answered s", f"cold_{n}_s"),
                (f"  of which ray.init s ({n})", f"ray_init_{n}_s"),
                (f"USS per idle agent MiB ({n})", f"uss_per_agent_mib_{n}"),
                (f"USS of the rest MiB ({n}: daemon, helpers)", f"fixed_uss_mib_{n}")]
    return out


def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def print_table(results: dict[str, Any], ns: list[int], markdown: bool = False) -> None:
    sides = [s for s in SIDES if s in results]
    table = [["", *sides]]
    for label, path in rows(results, ns):
        cells = [_cell(_get(results[s], path)) if isinstance(results[s], dict) else "-" for s in sides]
        if any(c not in ("", "-") for c in cells):
            table.append([label, *cells])
    table.append(["state across a restart", *("kept (LMDB, fsync'd)" if s == "foundation" else "lost (in memory)"
                                               for s in sides)])
    if markdown:
        print("| " + " | ".join(table[0]) + " |")
        print("|---|" + "---:|" * len(sides))
        for r in table[1:]:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for k, r in enumerate(table):
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                               strict=True))))
            if k == 0:
                print("  ".join("-" * w for w in widths))
    for s in sides:
        if isinstance(results[s], str):
            print(f"{s}: skipped: {results[s]}")
        else:
            print(f"{s}: {results[s].get('settings', '')}")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SIDES), help="comma-separated sides (default foundation,ray)")
    p.add_argument("--calls", type=int, default=200, help="call round trips (default 200)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of the agent/actor (default 20)")
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",") if x], default=[10, 100],
                   help="agents for the cold start and memory rows (default 10,100)")
    p.add_argument("--settle", type=float, default=2.0, help="idle seconds before memory is read (default 2)")
    p.add_argument("--poll", type=float, default=0.001, help="Foundation restart: retry interval, s (default 0.001)")
    p.add_argument("--ray-max", type=int, default=100, help="Ray: skip counts above this many actors (default 100)")
    p.add_argument("--ray-timeout", type=float, default=600.0, help="Ray: s for N actors to answer (default 600)")
    p.add_argument("--json", help="results file (default bench/results/agent_peers.json)")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = p.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    become_subreaper()
    results: dict[str, Any] = {}
    load: dict[str, Any] = {}
    for side in SIDES:
        if side not in chosen:
            continue
        load[side] = {"before": contention()}
        try:
            results[side] = measure_foundation(args) if side == "foundation" else measure_ray(args)
        except PeerUnavailable as exc:
            results[side] = str(exc)
            _log(f"{side}: skipped: {exc}")
        load[side]["after"] = contention()
    info = machine()
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    out = write_results("agent_peers", {"benchmark": "agent_peers", "machine": info, "command": command,
                                        "params": vars(args), "load": load, "results": results}, args.json)
    print(f"machine: nproc={info['nproc']}, {info['cpu_model']}, kernel {info['kernel']}, Python {info['python']}; "
          f"{info['date']}")
    print(f"command: {command}")
    print("load (1-min avg) before each side: "
          + ", ".join(f"{k} {v['before']['loadavg'][0]}" for k, v in load.items()))
    print("\nPython agents: Foundation agents and Ray actors")
    print_table(results, args.n)
    if args.markdown:
        print()
        print_table(results, args.n, markdown=True)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
