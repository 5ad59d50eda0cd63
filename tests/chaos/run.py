"""Chaos rounds against real foundationd daemons, checked offline: ``make chaos ROUNDS=N`` runs this.

    for each round (a new daemon in a new temporary directory, seeded from --seed and the round number):
        start foundationd: sinks (tests.chaos.sink:Sink, mailbox 64) + [workflows] (2 task agents)
        workload (workload.py) for --duration seconds  ||  nemesis (nemesis.py): a fault every 0.3-1 s
        stop the nemesis, stop the workload, heal, drain, read every effect (final reads)
        stop foundationd (SIGTERM; nothing may be left behind), judge its log (no traceback)
        check the round's history (checker.py); keep it as <dir>/round-K/history.jsonl

It prints one line a round and ends with ``chaos: R rounds, lost L, unexpected U, duplicated D, reordered O``;
exit 0 only if every count is 0, and no call was stale, no effect unread, no workflow stuck, no daemon problem.

    python -m tests.chaos.run --rounds 50 --duration 10 --nemeses kill-daemon --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agents.testing import DaemonProcess
from tests.chaos.checker import Result, check
from tests.chaos.history import History
from tests.chaos.nemesis import ALL, OPT_IN, Nemesis
from tests.chaos.workload import Workload

REPO = Path(__file__).resolve().parents[2]


def config(sinks: list[str], workflows: bool, mailbox: int = 64) -> str:
    text = "[supervisor]\nintensity = 1000\nperiod = 1\n"
    for sink in sinks:
        text += (f'[[supervisor.children]]\nname = "{sink}"\nagent = "tests.chaos.sink:Sink"\n'
                 f'working_dir = "{REPO}"\nmailbox = {mailbox}\n')
    if workflows:
        text += "[workflows]\ntask_agents = 2\nmonitor = false\n"
    return text


@dataclass
class Round:
    number: int
    result: Result
    faults: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_round(number: int, base: Path, seed: int, nemeses: tuple[str, ...], duration: float, *, sinks: int = 2,
              rate: float = 40.0, workflows: bool = True) -> Round:
    started = time.monotonic()
    rng = random.Random(f"{seed}/{number}")
    base.mkdir(parents=True, exist_ok=True)
    names = [f"sink-{i}" for i in range(sinks)]
    with_workflows = workflows
    daemon = DaemonProcess(base, config(names, with_workflows))
    history = History(base / "history.jsonl")
    problems: list[str] = []
    daemon.start()
    try:
        for name in names:
            daemon.wait_running(name, timeout=20)
        workload = Workload(daemon, history, random.Random(rng.random()), names, tag=f"r{number}",
                            effects=base / "effects", rate=rate, workflows=with_workflows)
        nemesis = Nemesis(daemon, history, random.Random(rng.random()), nemeses, sinks=names)
        stop = threading.Event()
        chaos = threading.Thread(target=nemesis.run, args=(stop,), name="nemesis", daemon=True)
        workload.start()
        chaos.start()
        stop.wait(duration)  # the round's length
        stop.set()
        chaos.join(timeout=60)
        workload.stop()
        nemesis.heal()
        workload.final()
    finally:
        history.close()
        try:
            daemon.stop()
        except AssertionError as exc:
            problems.append(str(exc))
    problems += daemon.problems()
    result = check(history.events)
    faults = Counter(e["value"]["fault"] for e in history.events if e["f"] == "nemesis" and e["type"] == "ok")
    return Round(number, result, faults, problems, time.monotonic() - started)


HEADER = (f"{'round':>5}  {'secs':>5}  {'faults':>6}  {'send ok/fail/?':>15}  {'calls':>5}  {'wf runs':>7}  "
          f"{'applied':>7}  {'lost':>4}  {'unexp':>5}  {'dup':>3}  {'reord':>5}  {'stale':>5}  {'unread':>6}  "
          f"{'stuck':>5}  problems")


def row(r: Round) -> str:
    ops = r.result.ops
    sends = f"{ops['send ok']}/{ops['send fail']}/{ops['send info']}"
    lost, unexpected, duplicated, reordered = r.result.counts
    return (f"{r.number:>5}  {r.seconds:>5.1f}  {sum(r.faults.values()):>6}  {sends:>15}  {ops['call ok']:>5}  "
            f"{ops['wf-run ok']:>7}  {r.result.applied:>7}  {lost:>4}  {unexpected:>5}  {duplicated:>3}  "
            f"{reordered:>5}  {len(r.result.stale):>5}  {len(r.result.unread):>6}  {len(r.result.stuck):>5}  "
            f"{len(r.problems)}")


def details(r: Round, limit: int = 5) -> list[str]:
    out = []
    for name in ("lost", "unexpected", "duplicated", "reordered", "stale", "unread", "stuck"):
        for item in getattr(r.result, name)[:limit]:
            out.append(f"  round {r.number}: {name}: {json.dumps(item)[:300]}")
    out += [f"  round {r.number}: problem: {p[:2000]}" for p in r.problems]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of workload and faults per round")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--nemeses", default="all",
                        help=f"comma-separated, or 'all' ({', '.join(ALL)}); opt-in: {', '.join(OPT_IN)}")
    parser.add_argument("--sinks", type=int, default=2)
    parser.add_argument("--rate", type=float, default=40.0, help="sends a second per producer")
    parser.add_argument("--no-workflows", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="keep histories and logs here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    nemeses = ALL if args.nemeses == "all" else tuple(n for n in args.nemeses.split(",") if n)
    base = args.dir or Path(tempfile.mkdtemp(prefix="foundation-chaos-"))
    print(f"chaos: seed {seed}, nemeses {','.join(nemeses)}, {args.duration:g}s a round, in {base}", flush=True)
    print(HEADER, flush=True)
    total = Result()
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        r = run_round(number, base / f"round-{number}", seed, nemeses, args.duration, sinks=args.sinks,
                      rate=args.rate, workflows=not args.no_workflows)
        rounds.append(r)
        total.merge(r.result)
        print(row(r), flush=True)
    bad = [line for r in rounds for line in details(r)]
    faults = sum((r.faults for r in rounds), Counter())
    print("faults: " + ", ".join(f"{name} {count}" for name, count in sorted(faults.items())))
    if bad:
        print("\n".join(bad))
    ok = total.valid and not any(r.problems for r in rounds)
    if ok and args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    elif not ok:
        print(f"histories and daemon logs kept in {base}")
    lost, unexpected, duplicated, reordered = total.counts
    print(f"chaos: {len(rounds)} rounds, lost {lost}, unexpected {unexpected}, duplicated {duplicated}, "
          f"reordered {reordered}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
