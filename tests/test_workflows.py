"""Durable workflows end to end (DESIGN 3.6): real daemons, real task agents, real commands.

The first test is the issue's acceptance test: 3 parallel then 2 sequential ``command`` steps, each appending a line
to a file; while it runs a task agent, the workflow's own process and the coordinator are SIGKILLed; the workflow
completes with all 5 results, and each step's line is in the file exactly once.
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
from agents.workflow import DefinitionError, Workflows, command, parallel, python, sequential
from ipc.errors import FoundationError

WORKFLOWS = """
[supervisor]
intensity = 100
period = 1
[workflows]
task_agents = 2
monitor = false
"""


def step(sid: str, out: Path, gate: Path | None = None, **extra: Any) -> dict[str, Any]:
    """A command step that appends its id to ``out``, waits for ``gate`` (if any), then prints a JSON result."""
    wait = f'while [ ! -e "{gate}" ]; do sleep 0.01; done; ' if gate else ""
    script = f'echo {sid} >> "{out}"; {wait}echo "{{\\"step\\": \\"{sid}\\"}}"'
    return {"task": {"id": sid, "action": "command", "args": {"command": ["sh", "-c", script]}, **extra}}


def run(daemon: DaemonProcess, definition: Any, tmp_path: Path, wf_id: str) -> str:
    path = tmp_path / f"{wf_id}.json"
    path.write_text(json.dumps(definition))
    done = ctl(daemon, "workflow", "run", str(path), "--id", wf_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == wf_id
    return wf_id


def status(daemon: DaemonProcess, wf_id: str) -> dict[str, Any]:
    done = ctl(daemon, "workflow", "status", wf_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def steps(daemon: DaemonProcess, wf_id: str) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in status(daemon, wf_id)["steps"]}


def kill(daemon: DaemonProcess, name: str) -> int:
    pid = daemon.pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_workflow_survives_sigkill_of_task_agent_workflow_process_and_coordinator(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out, gate1, gate2 = tmp_path / "out", tmp_path / "gate1", tmp_path / "gate2"
    definition = {"sequential": [
        {"parallel": [step("a", out, gate1), step("b", out, gate1), step("c", out, gate1)]},
        step("d", out, gate2),
        step("e", out),
    ]}
    wf = run(daemon, definition, tmp_path, "chaos")
    wait_for(lambda: out.exists() and sorted(out.read_text().split()) == ["a", "b", "c"], timeout=20,
             what="the three parallel steps running")
    for name in ("task-1", "workflow-chaos", "coordinator"):
        before = kill(daemon, name)
        daemon.wait_running(name, not_pid=before, timeout=20)
    gate1.touch()
    wait_for(lambda: "d" in out.read_text().split(), timeout=20, what="step d running")
    before = kill(daemon, "workflow-chaos")
    daemon.wait_running("workflow-chaos", not_pid=before, timeout=20)
    gate2.touch()

    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(ctl(daemon, "workflow", "results", wf).stdout)
    assert results == {sid: {"step": sid} for sid in "abcde"}
    lines = out.read_text().split()
    assert sorted(lines) == ["a", "b", "c", "d", "e"], lines
    assert all(s["attempts"] == 1 and s["state"] == "done" for s in steps(daemon, wf).values())
    wait_for(lambda: "workflow-chaos" not in [c["name"] for c in daemon.node("workflows")["children"]],
             what="the finished workflow leaving the tree")


def test_a_non_idempotent_step_killed_with_the_daemon_becomes_ambiguous_and_resolve_retry_runs_it_once_more(
        start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out = tmp_path / "out"
    # The first run appends and hangs; the run after it (there are 2 lines then) appends and ends.
    script = f'echo run >> "{out}"; [ "$(wc -l < "{out}")" -ge 2 ] || sleep 300.5'
    wf = run(daemon, {"task": {"id": "charge", "action": "command", "args": {"command": ["sh", "-c", script]}}},
             tmp_path, "amb")
    wait_for(lambda: out.exists() and out.read_text() == "run\n", timeout=20, what="the step running")
    daemon.kill(signal.SIGKILL)
    daemon.expect_exit(-signal.SIGKILL)
    daemon.start()

    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "waiting"
    assert summary["steps"][0]["state"] == "ambiguous"
    assert out.read_text() == "run\n"  # not run again by itself
    assert not [p for p in psutil.process_iter(["cmdline"]) if "300.5" in " ".join(p.info["cmdline"] or [])]

    done = ctl(daemon, "workflow", "resolve", wf, "charge", "--retry")
    assert done.returncode == 0, done.stderr
    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_text() == "run\nrun\n"
    assert steps(daemon, wf)["charge"]["attempts"] == 2


def test_resolve_done_gives_an_ambiguous_step_its_result(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out = tmp_path / "out"
    wf = run(daemon, {"sequential": [
        {"task": {"id": "once", "action": "command", "args": {"command": ["sh", "-c", f'echo x >> "{out}"; '
                                                                          "sleep 300.6"]}}},
        step("after", out)]}, tmp_path, "amb2")
    wait_for(out.exists, timeout=20, what="the step running")
    daemon.kill(signal.SIGKILL)
    daemon.expect_exit(-signal.SIGKILL)
    daemon.start()
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 1
    done = ctl(daemon, "workflow", "resolve", wf, "once", "--done", '{"charged": true}')
    assert done.returncode == 0, done.stderr
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 0
    assert json.loads(ctl(daemon, "workflow", "results", wf).stdout) == {"once": {"charged": True},
                                                                         "after": {"step": "after"}}
    assert out.read_text().split() == ["x", "after"]


def test_retries_an_infrastructure_failure_until_its_third_attempt_and_never_a_business_error(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    counter = tmp_path / "calls"
    retry = {"initial_interval": 0.05, "maximum_attempts": 5}
    script = (f'n=$(( $(cat "{counter}" 2>/dev/null || echo 0) + 1 )); echo $n > "{counter}"; '
              '[ $n -ge 3 ] || exit 75; echo "third time"')
    wf = run(daemon, {"parallel": [
        {"task": {"id": "infra", "action": "command", "args": {"command": ["sh", "-c", script]}, "retry": retry}},
        {"task": {"id": "py-infra", "action": "python", "retry": retry,
                  "args": {"function": "agents.workflow.examples:flaky",
                           "kwargs": {"counter": str(tmp_path / "py-calls"), "succeed_on": 3}}}},
    ]}, tmp_path, "retry")
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 0
    got = steps(daemon, wf)
    assert got["infra"]["attempts"] == 3
    assert got["infra"]["result"] == "third time"
    assert got["py-infra"]["attempts"] == 3
    assert got["py-infra"]["result"] == "ok on call 3"

    wf = run(daemon, {"parallel": [
        {"task": {"id": "biz", "action": "command", "args": {"command": ["sh", "-c", "echo no such order; exit 1"]},
                  "retry": retry}},
        {"task": {"id": "py-biz", "action": "python", "retry": retry,
                  "args": {"function": "agents.workflow.examples:refuse", "kwargs": {"reason": "over the limit"}}}},
    ]}, tmp_path, "biz")
    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["state"] == "failed"
    got = {s["id"]: s for s in summary["steps"]}
    assert got["biz"]["attempts"] == 1
    assert got["biz"]["error"]["category"] == "business"
    assert "no such order" in got["biz"]["error"]["message"]
    assert got["py-biz"]["attempts"] == 1
    assert got["py-biz"]["error"]["code"] == "refused"


def test_a_command_past_its_timeout_is_killed_with_its_whole_process_group(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    marker = "300.77"
    wf = run(daemon, {"task": {"id": "slow", "action": "command", "timeout": 0.5, "retry": {"maximum_attempts": 1},
                               "args": {"command": ["sh", "-c", f"sleep {marker} & sleep {marker}"]}}},
             tmp_path, "slow")
    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json")
    assert done.returncode == 1
    (slow,) = json.loads(done.stdout)["steps"]
    assert slow["state"] == "failed"
    assert slow["error"]["code"] == "timeout"

    def leftovers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]

    wait_for(lambda: not leftovers(), timeout=10, what="no sleep of the step left")


def test_cancel_kills_running_commands_and_list_shows_every_workflow(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out = tmp_path / "out"
    marker = "300.88"
    wf = run(daemon, {"sequential": [
        {"task": {"id": "long", "action": "command", "args": {"command": ["sh", "-c", f'echo long >> "{out}"; '
                                                                          f"sleep {marker}"]}}},
        step("never", out)]}, tmp_path, "cancelme")
    wait_for(out.exists, timeout=20, what="the long step running")
    done = ctl(daemon, "workflow", "cancel", wf, "--json")
    assert done.returncode == 0, done.stderr
    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json")
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert {s["id"]: s["state"] for s in json.loads(done.stdout)["steps"]} == {"long": "cancelled",
                                                                               "never": "cancelled"}
    wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])],
             timeout=10, what="the cancelled command gone")
    assert out.read_text().split() == ["long"]
    listing = json.loads(ctl(daemon, "workflow", "list", "--json").stdout)
    assert [(w["id"], w["state"]) for w in listing] == [("cancelme", "cancelled")]
    assert json.loads(ctl(daemon, "workflow", "list", "--state", "running", "--json").stdout) == []
    assert ctl(daemon, "workflow", "forget", wf).returncode == 0
    assert json.loads(ctl(daemon, "workflow", "list", "--json").stdout) == []
    assert "no_such_child" in ctl(daemon, "workflow", "status", wf).stderr


def test_invalid_definitions_are_refused_naming_the_step(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sequential": [
        {"task": {"id": "a", "action": "command", "args": {"command": ["true"]}}},
        {"task": {"id": "b", "action": "teleport"}}]}))
    done = ctl(daemon, "workflow", "run", str(bad))
    assert done.returncode == 2
    assert 'root.sequential[1] (task "b").action' in done.stderr
    done = ctl(daemon, "workflow", "status", "nosuch")
    assert done.returncode == 1
    assert "no_such_child" in done.stderr
    # The daemon checks too (a client that skips the CLI): a structured error, and it keeps running.
    with daemon.client() as client:
        reply = client.raw(json.dumps({"id": 1, "verb": "workflow", "args": {
            "op": "run", "definition": {"parallel": []}}}).encode() + b"\n")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request"
    assert "root.parallel" in reply["error"]["message"]


def test_a_commands_result_is_its_stdout_and_its_stderr_names_a_failure(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    ok = 'echo "warming up" >&2; echo \'{"n": 1}\'; echo "done, really" >&2'
    wf = run(daemon, {"task": {"id": "talk", "action": "command", "args": {"command": ["sh", "-c", ok]}}},
             tmp_path, "streams")
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 0
    assert json.loads(ctl(daemon, "workflow", "results", wf).stdout) == {"talk": {"n": 1}}
    bad = 'echo "partial" ; echo "no such table: users" >&2; exit 3'
    wf = run(daemon, {"task": {"id": "fail", "action": "command", "args": {"command": ["sh", "-c", bad]}}},
             tmp_path, "streams2")
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 1
    error = steps(daemon, wf)["fail"]["error"]
    assert "no such table: users" in json.dumps(error), error


def test_a_workflow_written_in_python_runs_with_the_same_checkpoints(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    flow = sequential(
        parallel(command("a", ["sh", "-c", "echo 2"]),
                 python("b", "agents.workflow.examples:add", {"a": 1, "b": 2}, idempotent=True)),
        python("c", "agents.workflow.examples:flaky", {"counter": str(tmp_path / "n"), "succeed_on": 2},
               retry={"initial_interval": 0.01}),
    )
    with pytest.raises(DefinitionError, match="used twice"):
        parallel(command("x", ["true"]), command("x", ["true"]))
    with Workflows(daemon.runtime_dir) as workflows:
        wf = workflows.run(flow, "py")
        summary = workflows.wait(wf, timeout=60)
        assert summary["state"] == "completed"
        assert workflows.results(wf) == {"a": 2, "b": 3, "c": "ok on call 2"}
        assert [w["id"] for w in workflows.list()] == ["py"]
        pooled = workflows.run(parallel(command("d", ["true"])))  # no id: a process of the warm pool
        assert workflows.wait(pooled, timeout=60)["state"] == "completed"
        assert sorted(w["id"] for w in workflows.list()) == sorted(["py", pooled])
        with pytest.raises(FoundationError, match="already_exists"):
            workflows.run(flow, "py")


def test_pause_lets_the_running_step_finish_and_starts_no_other_until_resume(start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out, gate = tmp_path / "out", tmp_path / "gate"
    wf = run(daemon, {"sequential": [step("first", out, gate), step("second", out)]}, tmp_path, "pz")
    wait_for(out.exists, timeout=20, what="the first step running")
    assert ctl(daemon, "workflow", "pause", wf).returncode == 0
    gate.touch()
    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json")
    assert json.loads(done.stdout)["state"] == "paused"
    assert out.read_text().split() == ["first"]
    assert {s["id"]: s["state"] for s in json.loads(done.stdout)["steps"]} == {"first": "done", "second": "pending"}
    assert ctl(daemon, "workflow", "resume", wf).returncode == 0
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 0
    assert out.read_text().split() == ["first", "second"]


def inline_step(sid: str, out: Path, gate: Path | None = None, **extra: Any) -> dict[str, Any]:
    kwargs = {"out": str(out), "line": sid, "gate": str(gate) if gate else ""}
    return {"task": {"id": sid, "action": "python", **extra,
                     "args": {"function": "agents.workflow.examples:append_and_wait", "kwargs": kwargs,
                              "inline": True}}}


def test_inline_steps_run_in_the_workflows_process_and_a_kill_mid_step_is_ambiguous_unless_idempotent(
        start_daemon, tmp_path):
    daemon = start_daemon(WORKFLOWS)
    out, gate = tmp_path / "out", tmp_path / "gate"
    wf = run(daemon, {"sequential": [inline_step("a", out), inline_step("b", out, gate),
                                     inline_step("c", out, gate, idempotent=True, retry={"initial_interval": 0.01}),
                                     inline_step("d", out)]}, tmp_path, "inl")
    wait_for(lambda: out.exists() and out.read_text().split() == ["a", "b"], timeout=20, what="step b running")
    pid = kill(daemon, "workflow-inl")
    done = ctl(daemon, "workflow", "wait", wf, "--timeout", "60", "--json")
    assert json.loads(done.stdout)["state"] == "waiting", done.stdout
    assert steps(daemon, wf)["b"]["state"] == "ambiguous"
    assert ctl(daemon, "workflow", "resolve", wf, "b", "--done", '"b"').returncode == 0
    wait_for(lambda: out.read_text().split() == ["a", "b", "c"], timeout=20, what="step c running")
    kill(daemon, "workflow-inl")  # c is idempotent: run again, once the process is back
    daemon.wait_running("workflow-inl", not_pid=pid, timeout=20)
    gate.touch()
    assert ctl(daemon, "workflow", "wait", wf, "--timeout", "60").returncode == 0
    assert out.read_text().split() == ["a", "b", "c", "c", "d"]
    got = steps(daemon, wf)
    assert got["c"]["attempts"] == 2
    assert got["d"]["result"] == "d"
    assert [p.info["name"] for p in psutil.process_iter(["name"])].count("never") == 0
