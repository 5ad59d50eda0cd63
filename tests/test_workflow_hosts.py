"""Workflows run by a host (``wfhost-K``, agents/workflow/host.py): ``workflow run`` without ``--id``.

The promise is the one of a workflow's own process (tests/test_workflows.py): SIGKILL of the host, of a task agent or
of the daemon loses no step and runs none twice unless it is idempotent; several workflows share the host, each with
its own record, and a kill of the host is survived by all of them.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import ctl

from agents.testing import DaemonProcess, wait_for
from ipc.state_store import SharedStateStore, StateError, StateStore

WORKFLOWS = """
[supervisor]
intensity = 100
period = 1
[workflows]
task_agents = 2
monitor = false
"""

pytestmark = pytest.mark.timeout(120)


def inline_step(sid: str, out: Path, gate: Path | None = None, **extra: Any) -> dict[str, Any]:
    kwargs = {"out": str(out), "line": sid, "gate": str(gate) if gate else ""}
    return {"task": {"id": sid, "action": "python", **extra,
                     "args": {"function": "agents.workflow.examples:append_and_wait", "kwargs": kwargs,
                              "inline": True}}}


def agent_step(sid: str, out: Path, gate: Path | None = None, **extra: Any) -> dict[str, Any]:
    step = inline_step(sid, out, gate, **extra)
    del step["task"]["args"]["inline"]
    return step


def run(daemon: DaemonProcess, definition: Any, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(definition))
    done = ctl(daemon, "workflow", "run", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status(daemon: DaemonProcess, wf_id: str) -> dict[str, Any]:
    done = ctl(daemon, "workflow", "status", wf_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sleeping() -> bool:
    return any("300.25" in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))


def kill(daemon: DaemonProcess, name: str) -> int:
    pid = daemon.pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_run_without_id_is_hosted_and_run_with_wait_answers_its_summary(start_daemon):
    daemon = start_daemon(WORKFLOWS)
    flow = {"sequential": [{"task": {"id": f"s{i}", "action": "python",
                                     "args": {"function": "agents.workflow.examples:add", "kwargs": {"a": i, "b": 1},
                                              "inline": i != 1}}} for i in range(3)]}
    with daemon.client(timeout=30) as client:
        summary = client.request("workflow", op="run", definition=flow, wait=30)
        assert summary["state"] == "completed"
        assert [s["result"] for s in summary["steps"]] == [1, 2, 3]
        assert client.request("workflow", op="results", id=summary["id"]) == {"s0": 1, "s1": 2, "s2": 3}
        listed = client.request("workflow", op="list")
        assert [w["id"] for w in listed] == [summary["id"]]  # the host's own state is not a workflow
        wf_id = client.request("workflow", op="run", definition=flow)["id"]  # answered once on disk
        assert client.request("workflow", op="wait", id=wf_id, timeout=30)["state"] == "completed"
    children = [c["name"] for c in daemon.node("workflows")["children"]]
    assert children == ["wfhost-1"]  # no process was started for either run


def test_a_host_killed_mid_step_keeps_every_workflow_it_runs(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out_a, out_b, gate = tmp_path / "a", tmp_path / "b", tmp_path / "gate"
    # A: an inline step that waits (killed with the host: ambiguous), then an idempotent one (run again).
    wf_a = run(daemon, {"sequential": [inline_step("a1", out_a), inline_step("a2", out_a, gate),
                                       inline_step("a3", out_a)]}, tmp_path, "a")
    wait_for(lambda: out_a.exists() and out_a.read_text().split() == ["a1", "a2"], timeout=20,
             what="step a2 running in the host")
    pid = kill(daemon, "wfhost-1")
    summary = json.loads(ctl(daemon, "workflow", "wait", wf_a, "--timeout", "60", "--json").stdout)
    assert summary["state"] == "waiting", summary
    assert [s["state"] for s in summary["steps"]] == ["done", "ambiguous", "pending"]
    daemon.wait_running("wfhost-1", not_pid=pid, timeout=20)
    # B runs on the same host meanwhile: a task agent's step, the host killed while it runs.
    wf_b = run(daemon, {"sequential": [agent_step("b1", out_b, gate), inline_step("b2", out_b, idempotent=True)]},
               tmp_path, "b")
    wait_for(lambda: out_b.exists() and out_b.read_text().split() == ["b1"], timeout=20, what="step b1 running")
    kill(daemon, "wfhost-1")
    gate.touch()
    assert ctl(daemon, "workflow", "wait", wf_b, "--timeout", "60").returncode == 0
    assert out_b.read_text().split() == ["b1", "b2"]
    # The operator settles A through the coordinator, which asks the host named in A's record.
    assert ctl(daemon, "workflow", "resolve", wf_a, "a2", "--done", '"by hand"').returncode == 0
    assert ctl(daemon, "workflow", "wait", wf_a, "--timeout", "60").returncode == 0
    assert out_a.read_text().split() == ["a1", "a2", "a3"]
    assert {s["id"]: s.get("result") for s in status(daemon, wf_a)["steps"]} == {"a1": "a1", "a2": "by hand",
                                                                                  "a3": "a3"}


def test_a_hosted_workflow_survives_sigkill_of_the_daemon_and_cancel_reaches_its_host(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out, gate = tmp_path / "out", tmp_path / "gate"
    hang = run(daemon, {"task": {"id": "h", "action": "command", "args": {"command": ["sleep", "300.25"]}}},
               tmp_path, "hang")
    wait_for(sleeping, timeout=20, what="the command running")  # (first: x may hold the same task agent)
    done_one = run(daemon, {"sequential": [agent_step("x", out, gate, idempotent=True), inline_step("y", out)]},
                   tmp_path, "x")
    wait_for(lambda: out.exists() and "x" in out.read_text().split(), timeout=20, what="step x running")
    daemon.kill(signal.SIGKILL)
    daemon.expect_exit(-signal.SIGKILL)
    daemon.start()
    gate.touch()
    summary = json.loads(ctl(daemon, "workflow", "wait", done_one, "--timeout", "60", "--json").stdout)
    assert summary["state"] == "completed", summary
    assert out.read_text().split().count("y") == 1
    # The command died with the daemon: not idempotent, so ambiguous; cancel goes to the host and settles it.
    summary = json.loads(ctl(daemon, "workflow", "wait", hang, "--timeout", "60", "--json").stdout)
    assert summary["steps"][0]["state"] == "ambiguous", summary
    assert ctl(daemon, "workflow", "cancel", hang).returncode == 0
    assert status(daemon, hang)["state"] == "cancelled"
    assert not sleeping()


def test_an_idempotent_inline_step_that_kills_its_host_counts_its_attempts_and_fails(start_daemon, tmp_path):
    """Such a step has no durable intent (it may run again); the host's marker makes each death a lost attempt, so
    the step fails after its policy's attempts instead of killing the host at every restart."""
    daemon = start_daemon(WORKFLOWS)
    count, out = tmp_path / "count", tmp_path / "out"
    retry = {"maximum_attempts": 2, "initial_interval": 0.01}
    crash = {"task": {"id": "crash", "action": "python", "idempotent": True, "retry": retry,
                      "args": {"function": "agents.workflow.examples:die", "kwargs": {"count": str(count)},
                               "inline": True}}}
    wf = run(daemon, {"sequential": [inline_step("before", out, idempotent=True), crash]}, tmp_path, "crash")
    summary = json.loads(ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json").stdout)
    assert summary["state"] == "failed", summary
    assert [(s["state"], s["attempts"]) for s in summary["steps"]] == [("done", 1), ("failed", 2)]
    assert count.read_text() == "2"
    other = run(daemon, inline_step("after", out), tmp_path, "after")  # the host runs on
    assert ctl(daemon, "workflow", "wait", other, "--timeout", "60").returncode == 0


def test_a_shared_store_commits_side_states_in_the_same_transaction(tmp_path):
    with SharedStateStore(tmp_path / "env", "wfhost-1") as host:
        host.commit({"active": ["w"]}, 7, side={"workflow-w": {"state": "running"}})
        assert host.load() == ({"active": ["w"]}, 7)
        assert host.load_of("workflow-w") == ({"state": "running"}, 0)
        with pytest.raises(StateError) as err:
            host.commit({"active": []}, 8, side={"workflow-w": None})
        assert err.value.code == "invalid"
        assert host.load() == ({"active": ["w"]}, 7)  # nothing of a refused commit is written
    with StateStore(tmp_path / "own") as own, pytest.raises(StateError) as err:
        own.commit({}, 1, side={"other": {}})
    assert err.value.code == "invalid"
