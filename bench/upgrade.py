"""In-place upgrade: how long ``foundationctl upgrade --wait`` takes with N children (issue 19, docs/upgrade.md).

    .venv/bin/python bench/upgrade.py [--children 1000] [--agents 0] [--runs 5]

One foundationd with N `sleep 100000` workers (and with ``--agents A``, A example counter agents under a supervisor
of their own); each run times ``upgrade --wait`` from the client's side (request to adopted, precheck included)
and reads the daemon's own figure (handover written to tree adopted, ``took_ms``), then checks that every worker
and agent kept its pid and that each agent answers a call on its resumed session.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, print_table, running_daemon, summary_ms, wait_all_exec, workers_config, write_results
from daemon.control.verbs.upgrade import _wait_result
from ipc.control import ControlClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=0, help="example counter agents in the tree too")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", help="JSON results path (default bench/results/upgrade.json)")
    args = parser.parse_args()
    client_side: list[float] = []
    daemon_side: list[float] = []
    config = workers_config(args.children, ["sleep", "100000"])
    if args.agents:
        config += '\n[[supervisor.children]]\nname = "agents"\n' + "".join(
            f'[[supervisor.children.children]]\nname = "a{i}"\nagent = "agents.examples.counter:Counter"\n'
            for i in range(args.agents))
    with running_daemon(config) as daemon:
        pids = wait_all_exec(daemon, "sleep", args.children, timeout=300)
        for i in range(args.agents):
            daemon.wait_running(f"a{i}", timeout=120)
        agent_pids = {f"a{i}": daemon.pid(f"a{i}") for i in range(args.agents)}
        for _ in range(args.runs):
            began = time.monotonic()
            with ControlClient(daemon.socket_path, timeout=60) as client:
                answer = client.request("upgrade")
                client.wait_closed()
            done = _wait_result(daemon.socket_path, int(answer["generation"]) + 1)
            client_side.append(time.monotonic() - began)
            assert done.get("ok"), done
            daemon_side.append(float(done["took_ms"]) / 1000)
            after = {c["name"]: c["pid"] for c in daemon.status()["tree"]["children"] if c["name"] != "agents"}
            assert after == pids, "a worker changed pid across the upgrade"
            for name, pid in agent_pids.items():
                assert daemon.pid(name) == pid, f"{name} changed pid across the upgrade"
                daemon.request("call", name=name, body={"get": True}, timeout=30)
    results = {"children": args.children, "agents": args.agents, "client": summary_ms(client_side),
               "handover": summary_ms(daemon_side),
               "machine": machine()}
    print_table(["children", "agents", "upgrade --wait p50 ms", "handover p50 ms", "max ms"],
                [[args.children, args.agents, results["client"]["p50_ms"], results["handover"]["p50_ms"],
                  results["client"]["max_ms"]]])
    name = "upgrade-agents" if args.agents else "upgrade"
    print(f"results: {write_results(name, results, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
