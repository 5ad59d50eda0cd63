"""The workflow definition parser and the engine's decisions, as pure functions (no processes)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agents.testing import AgentHarness
from agents.workflow import engine
from agents.workflow.errors import BusinessError, InfrastructureError, classify
from agents.workflow.process import WorkflowProcess, task_agent
from ipc.errors import ErrorCode, FoundationError
from ipc.workflow_def import DefinitionError, RetryPolicy, inline, parse, retryable, tasks
from ipc.workflow_record import summary


def task(tid: str, **extra: Any) -> dict[str, Any]:
    return {"task": {"id": tid, "action": "python", "args": {"function": "m:f"}, **extra}}


FLOW = {"sequential": [{"parallel": [task("a"), task("b")]}, task("c"), task("d", idempotent=True)]}


def record(definition: Any = FLOW) -> dict[str, Any]:
    return engine.new_record("w", definition, now=1.0)


def dispatched(rec: dict[str, Any]) -> list[tuple[str, int]]:
    return [(d.task.id, d.attempt) for d in engine.dispatch(parse(rec["definition"]), rec, 2.0)]


def done(rec: dict[str, Any], sid: str, attempt: int = 1, value: Any = None) -> float | None:
    return engine.outcome(parse(rec["definition"]), rec, sid, attempt, {"ok": value}, now=3.0)


def failed(rec: dict[str, Any], sid: str, category: str, attempt: int = 1) -> float | None:
    error = {"code": "x", "category": category, "message": "m"}
    return engine.outcome(parse(rec["definition"]), rec, sid, attempt, {"error": error}, now=3.0)


@pytest.mark.parametrize(("definition", "where"), [
    ({"task": {"id": "a", "action": "python"}}, 'root (task "a").args.function'),
    ({"sequential": []}, "root.sequential: a non-empty list"),
    ({"parallel": [task("a"), task("a")]}, "used twice"),
    ({"sequential": [task("a"), {"task": {"id": "b", "action": "command", "args": {"command": "ls"}}}]},
     'root.sequential[1] (task "b").args.command'),
    ({"task": {"id": "a", "action": "call", "args": {"agent": "x"}}}, "args.msg"),
    ({"task": {"id": "a", "action": "python", "args": {"function": "m:f"}, "retry": {"maxAttempts": 2}}},
     "unknown key 'maxAttempts'"),
    ({"task": {"id": "a", "action": "python", "args": {"function": "m:f"}, "timeout": 0}}, "timeout"),
    ({"task": {"id": "bad id", "action": "python", "args": {"function": "m:f"}}}, "root.task.id"),
    ({"loop": []}, "unknown step kind 'loop'"),
    ([task("a")], "exactly one of"),
])
def test_invalid_definitions_name_the_step_and_key(definition: Any, where: str) -> None:
    with pytest.raises(DefinitionError, match=None) as err:
        parse(definition)
    assert where in str(err.value)


def test_retry_policy_uses_temporals_fields_and_caps_the_interval() -> None:
    policy = parse(task("a", retry={"initial_interval": 1, "backoff_coefficient": 3, "maximum_interval": 5,
                                    "maximum_attempts": 4, "non_retryable_errors": ["card_declined"]})).retry
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert policy.allows(3)
    assert not policy.allows(4)
    assert RetryPolicy(maximum_attempts=0).allows(10_000)
    assert retryable({"code": "x", "category": "infrastructure"}, policy)
    assert retryable({"code": "x", "category": "timeout"}, policy)
    assert not retryable({"code": "card_declined", "category": "infrastructure"}, policy)
    assert not retryable({"code": "x", "category": "business"}, policy)
    assert not retryable({"code": "x", "category": "validation"}, policy)


def test_parallel_then_sequential_order_and_completion() -> None:
    rec = record()
    assert dispatched(rec) == [("a", 1), ("b", 1)]
    assert dispatched(rec) == []  # running already: nothing twice
    done(rec, "a", value=1)
    assert dispatched(rec) == []  # b still runs
    done(rec, "b", value=2)
    assert dispatched(rec) == [("c", 1)]
    done(rec, "c")
    assert dispatched(rec) == [("d", 1)]
    done(rec, "d", value="x")
    assert rec["state"] == "completed"
    assert engine.idle(rec)
    assert engine.results(rec) == {"a": 1, "b": 2, "c": None, "d": "x"}
    assert [s["id"] for s in summary(rec)["steps"]] == ["a", "b", "c", "d"]


def test_a_result_for_another_attempt_or_a_step_not_running_is_ignored() -> None:
    rec = record()
    dispatched(rec)
    before = copy.deepcopy(rec)
    assert done(rec, "a", attempt=2) is None
    assert done(rec, "c") is None
    assert rec == before
    done(rec, "a", value=1)
    done(rec, "a", value=99)  # the same result told twice
    assert rec["steps"]["a"]["result"] == 1


def test_infrastructure_errors_retry_after_a_delay_business_errors_fail_the_workflow() -> None:
    rec = record({"parallel": [task("i", retry={"initial_interval": 0.5, "maximum_attempts": 2}), task("b")]})
    dispatched(rec)
    assert failed(rec, "i", "infrastructure") == 0.5
    assert rec["steps"]["i"]["state"] == "pending"
    assert not engine.idle(rec)
    assert dispatched(rec) == []  # waits for its retry message
    assert engine.release(rec, "i", 1)
    assert not engine.release(rec, "i", 1)  # a second retry message changes nothing
    assert dispatched(rec) == [("i", 2)]
    assert failed(rec, "i", "infrastructure", attempt=2) is None  # out of attempts
    assert rec["steps"]["i"]["state"] == "failed"
    assert rec["state"] == "running"  # b still runs
    failed(rec, "b", "business")
    assert rec["state"] == "failed"
    assert rec["steps"]["b"]["attempts"] == 1
    assert engine.idle(rec)


def test_a_lost_step_is_ambiguous_unless_idempotent_and_resolve_settles_it() -> None:
    rec = record({"parallel": [task("once"), task("again", idempotent=True, retry={"initial_interval": 0})]})
    root = parse(rec["definition"])
    dispatched(rec)
    engine.outcome(root, rec, "once", 1, {"lost": "the daemon died"}, now=3.0)
    assert rec["steps"]["once"]["state"] == "ambiguous"
    assert engine.outcome(root, rec, "again", 1, {"lost": "the daemon died"}, now=3.0) == 0.0
    engine.release(rec, "again", 1)
    assert dispatched(rec) == [("again", 2)]
    done(rec, "again", attempt=2)
    assert rec["state"] == "waiting"
    assert engine.idle(rec)
    engine.resolve(root, rec, "once", done=None, retry=True, now=4.0)
    assert dispatched(rec) == [("once", 2)]
    done(rec, "once", attempt=2, value="ok")
    assert rec["state"] == "completed"
    with pytest.raises(ValueError, match="only an ambiguous or failed step"):
        engine.resolve(root, rec, "once", done=1, retry=False, now=5.0)


def test_pause_and_cancel() -> None:
    rec = record()
    root = parse(rec["definition"])
    dispatched(rec)
    rec["paused"] = True
    done(rec, "a")
    done(rec, "b")
    assert dispatched(rec) == []
    assert rec["state"] == "paused"
    assert engine.idle(rec)
    rec["paused"] = False
    assert dispatched(rec) == [("c", 1)]
    assert engine.cancel(root, rec, now=5.0) == ["c"]
    assert rec["state"] == "cancelled"
    assert {s["state"] for s in rec["steps"].values()} == {"done", "cancelled"}
    assert dispatched(rec) == []
    assert done(rec, "c") is None


def test_step_errors_keep_their_category() -> None:
    assert classify(InfrastructureError("down"))["category"] == "infrastructure"
    assert classify(BusinessError("no"))["retryable"] is False
    assert classify(TimeoutError())["category"] == "timeout"
    assert classify(ConnectionRefusedError())["category"] == "infrastructure"
    assert classify(KeyError("k"))["category"] == "business"
    assert classify(FoundationError(ErrorCode.AGENT_DOWN, "gone"))["category"] == "unavailable"


def test_the_workflow_process_makes_the_same_sends_when_a_message_is_handled_again() -> None:
    """The replay argument: handling the same message on the same committed state sends the same casts."""
    first = AgentHarness(WorkflowProcess, name="workflow-w")
    first.cast({"start": {"id": "w", "definition": FLOW}})
    committed = copy.deepcopy(first.state)
    first.cast({"step_done": {"step": "a", "attempt": 1, "result": {"ok": 1}}})
    first.cast({"step_done": {"step": "b", "attempt": 1, "result": {"ok": 2}}})
    again = AgentHarness(WorkflowProcess, state=committed, name="workflow-w")
    again.cast({"step_done": {"step": "a", "attempt": 1, "result": {"ok": 1}}})
    again.cast({"step_done": {"step": "b", "attempt": 1, "result": {"ok": 2}}})
    assert first.sent[2:] == again.sent
    assert again.sent == [(task_agent("w", "c", 1), {"run": {
        "workflow": "workflow-w", "key": "w/c/1", "step": "c", "attempt": 1, "action": "python",
        "args": {"function": "m:f"}, "timeout": 3600.0, "idempotent": False}})]
    assert [t.id for t in tasks(parse(FLOW))] == ["a", "b", "c", "d"]


def test_a_failing_operator_request_leaves_the_state_untouched() -> None:
    h = AgentHarness(WorkflowProcess, name="workflow-w")
    h.cast({"start": {"id": "w", "definition": FLOW}})
    before = copy.deepcopy(h.state)
    with pytest.raises(ValueError, match="is running"):
        h.call({"resolve": {"step": "a", "retry": True}})
    assert h.state == before


def test_dispatch_takes_only_the_steps_select_wants_and_inline_is_a_python_option() -> None:
    flow = {"parallel": [task("a", args={"function": "m:f", "inline": True}), task("b")]}
    rec = record(flow)
    root = parse(flow)
    assert [d.task.id for d in engine.dispatch(root, rec, 2.0, select=inline)] == ["a"]
    assert rec["steps"]["b"]["state"] == "pending"
    assert [d.task.id for d in engine.dispatch(root, rec, 2.0)] == ["b"]
    with pytest.raises(DefinitionError, match=r"args\.inline"):
        parse(task("x", args={"function": "m:f", "inline": "yes"}))
