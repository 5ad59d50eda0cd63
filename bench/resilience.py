"""The resilience services' costs (issue 14), side by side in one run:

* ``breaker``  — what a closed host-wide breaker adds to a no-op call inside a real agent process (``self.guarded``
  and ``with self.breaker(...)``), next to pybreaker's ``CircuitBreaker.call`` on the same no-op in the same
  process (pybreaker keeps its state in-process; nothing is shared). Each call is timed alone (perf_counter_ns);
  the cost added is the call's percentile minus the bare no-op's (the timer's own cost cancels out);
* ``limiter``  — one ``self.acquire`` grant, through the daemon (a round trip on the agent's socket), and with leased
  tokens (``lease = 16``: one round trip per 17 grants; the others are answered in the agent).

Targets (issue 14): a closed breaker p50 <= 10 us; a grant through the daemon p50 <= 0.3 ms. The script measures; it
asserts nothing. Results: a table on stdout, JSON in bench/results/resilience.json.

    python bench/resilience.py [--calls 20000] [--grants 5000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agents.sdk import Agent  # noqa: E402

CONFIG = f"""
[resilience.limits.plain]
rate = 1e9
burst = 1e9
[resilience.limits.leased]
rate = 1e9
burst = 1e9
lease = 16
lease_for = 1.0

[[supervisor.children]]
name = "bench"
agent = "bench.resilience:ResilienceBench"
working_dir = "{REPO}"
"""


def noop() -> None:
    return None


def _timed(fn: Callable[[], Any], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def _pct(sorted_ns: list[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(p / 100 * len(sorted_ns)))] / 1000.0  # us


class ResilienceBench(Agent):
    """``{"breaker": N}`` and ``{"acquire": LIMIT, "n": N}``: per-call percentiles (us), measured in this process."""

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        if "breaker" in msg:
            import pybreaker  # noqa: PLC0415 (the bench extra)

            n = int(msg["breaker"])
            py = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
            guard = self.breaker

            def with_block() -> None:
                with guard("bench-dep"):
                    noop()

            kinds: dict[str, Callable[[], Any]] = {
                "bare no-op": noop,
                "foundation guarded()": lambda: self.guarded("bench-dep", noop),
                "foundation with breaker()": with_block,
                "pybreaker call()": lambda: py.call(noop),
            }
            for fn in kinds.values():  # warm up (the first guarded call asks the daemon for the breaker's state)
                _timed(fn, 1000)
            samples: dict[str, list[int]] = {k: [] for k in kinds}
            for _ in range(10):  # interleaved rounds: a burst of load on the shared machine hits every kind alike
                for kind, fn in kinds.items():
                    samples[kind] += _timed(fn, n // 10)
            return {k: summary(v) for k, v in samples.items()}, state
        n = int(msg["n"])
        name = msg["acquire"]
        _timed(lambda: self.acquire(name), 200)
        return summary(_timed(lambda: self.acquire(name), n)), state


def summary(ns: list[int]) -> dict[str, float]:
    ns = sorted(ns)
    return {"p50": _pct(ns, 50), "p90": _pct(ns, 90), "p99": _pct(ns, 99), "n": len(ns)}


def main() -> None:
    from bench.common import code_version, machine, print_table, running_daemon, write_results  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000, help="calls per breaker kind")
    parser.add_argument("--grants", type=int, default=5000, help="grants per limiter kind")
    parser.add_argument("--json", default=None, help="results path (default bench/results/resilience.json)")
    args = parser.parse_args()
    with running_daemon(CONFIG) as daemon:
        daemon.wait_running("bench")
        breaker = daemon.request("call", name="bench", body={"breaker": args.calls}, timeout=300)["reply"]
        plain = daemon.request("call", name="bench", body={"acquire": "plain", "n": args.grants}, timeout=300)["reply"]
        leased = daemon.request("call", name="bench", body={"acquire": "leased", "n": args.grants},
                                timeout=300)["reply"]
    bare = breaker["bare no-op"]
    rows = []
    for kind, s in breaker.items():
        added = [round(s[p] - bare[p], 3) for p in ("p50", "p90", "p99")]
        rows.append([kind, s["p50"], s["p99"], *(["-"] * 3 if kind == "bare no-op" else added)])
    print("closed breaker, a no-op call inside one agent process (us)")
    print_table(["", "call p50", "call p99", "added p50", "added p90", "added p99"], rows)
    print()
    print("one limiter grant, self.acquire(name) in an agent (us)")
    print_table(["", "p50", "p90", "p99"], [["through the daemon", plain["p50"], plain["p90"], plain["p99"]],
                                            ["leased (lease = 16)", leased["p50"], leased["p90"], leased["p99"]]])
    out = write_results("resilience", {"machine": machine(), "code": code_version(), "calls": args.calls,
                                       "grants": args.grants, "breaker_us": breaker,
                                       "limiter_us": {"daemon": plain, "leased": leased}}, args.json)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
