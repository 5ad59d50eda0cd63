"""The chaos checker on hand-written histories: each anomaly it must find, and the unknown outcomes it must allow."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.checker import check, pair
from tests.chaos.history import History

pytestmark = pytest.mark.timeout(10)


class H:
    """A history written the way the workload writes it, with short names."""

    def __init__(self) -> None:
        self.h = History()

    def send(self, n: int, status: str, ch: str = "p", to: str = "a", process: str | None = None) -> H:
        process = process or ch
        self.h.invoke(process, "send", {"to": to, "ch": ch, "n": n, "producer": True})
        if status != "none":
            getattr(self.h, status)(process, "send", {"id": f"{to}/{n}"})
        return self

    def invoke(self, n: int, ch: str = "p", to: str = "a") -> H:
        self.h.invoke(ch, "send", {"to": to, "ch": ch, "n": n, "producer": True})
        return self

    def complete(self, n: int, status: str, ch: str = "p") -> H:
        getattr(self.h, status)(ch, "send", {"id": n})
        return self

    def call(self, last: dict[str, int], to: str = "a") -> H:
        self.h.invoke("caller", "call", {"to": to})
        self.h.ok("caller", "call", {"last": last})
        return self

    def read(self, applied: list[Any], to: str = "a") -> H:
        self.h.invoke("final", "read", {"to": to})
        self.h.ok("final", "read", {"to": to, "applied": applied})
        return self

    def result(self) -> Any:
        return check(self.h.events)


def test_a_clean_history_is_valid() -> None:
    res = H().send(1, "ok").send(2, "ok").send(3, "ok").read([["p", 1], ["p", 2], ["p", 3]]).result()
    assert res.valid
    assert res.counts == (0, 0, 0, 0)
    assert res.applied == 3
    assert res.ops["send ok"] == 3


def test_an_acknowledged_send_missing_from_the_final_read_is_lost() -> None:
    res = H().send(1, "ok").send(2, "ok").read([["p", 1]]).result()
    assert res.counts == (1, 0, 0, 0)
    assert res.lost == [{"to": "a", "ch": "p", "n": 2}]


def test_unknown_outcomes_are_allowed_either_way() -> None:
    applied = H().send(1, "info").send(2, "none", process="q").read([["p", 1], ["p", 2]]).result()
    missing = H().send(1, "info").send(2, "none", process="q").read([]).result()
    assert applied.valid
    assert missing.valid


def test_an_effect_nobody_sent_or_whose_send_failed_is_unexpected() -> None:
    res = H().send(1, "fail").read([["p", 1], ["ghost", 7]]).result()
    assert res.counts == (0, 2, 0, 0)
    assert {(u["ch"], u["n"]) for u in res.unexpected} == {("p", 1), ("ghost", 7)}


def test_a_failed_attempt_then_an_acknowledged_retry_is_one_message() -> None:
    res = H().send(1, "fail").send(1, "ok").read([["p", 1]]).result()
    assert res.valid


def test_an_effect_applied_twice_is_duplicated_once_per_message() -> None:
    res = H().send(1, "ok").send(1, "ok").read([["p", 1], ["p", 1], ["p", 1]]).result()
    assert res.counts == (0, 0, 1, 0)
    assert res.duplicated[0]["times"] == 3


def test_an_acknowledged_message_applied_after_a_later_one_is_reordered() -> None:
    res = H().send(1, "ok").send(2, "ok").read([["p", 2], ["p", 1]]).result()
    assert res.counts == (0, 0, 0, 1)
    assert res.reordered[0]["n"] == 2  # 2 was invoked after 1 was acknowledged, yet applied first


def test_order_is_per_channel_and_unknown_sends_carry_no_order() -> None:
    other_channel = H().send(1, "ok", ch="p").send(1, "ok", ch="q").read([["q", 1], ["p", 1]]).result()
    assert other_channel.valid
    # 1's reply was lost (unknown), so 2 is concurrent with it: either order is fine.
    unknown_first = H().send(1, "info").send(2, "ok").read([["p", 2], ["p", 1]]).result()
    assert unknown_first.valid
    # Concurrent sends on one channel (both in flight) carry no order either.
    concurrent = (H().invoke(1).invoke(2, ch="p2").complete(1, "ok").complete(2, "ok", ch="p2")
                  .read([["p", 1], ["p2", 2]]).result())
    assert concurrent.valid


def test_a_call_that_does_not_see_an_acknowledged_send_is_stale() -> None:
    res = H().send(1, "ok").send(2, "ok").call({"p": 1}).read([["p", 1], ["p", 2]]).result()
    assert res.counts == (0, 0, 0, 0)
    assert res.stale == [{"to": "a", "ch": "p", "call": 4, "saw": 1, "acked": 2}]
    assert not res.valid
    assert H().send(1, "ok").call({"p": 1}).send(2, "ok").read([["p", 1], ["p", 2]]).result().valid


def test_acknowledged_sends_to_an_agent_never_read_are_unread_not_lost() -> None:
    res = H().send(1, "ok", to="b").read([]).result()
    assert res.counts == (0, 0, 0, 0)
    assert res.unread == [{"to": "b", "ch": "p", "n": 1}]
    assert not res.valid


def test_a_completion_without_its_invoke_is_refused() -> None:
    h = History()
    h.ok("p", "send", {})
    with pytest.raises(ValueError, match="without its invoke"):
        pair(h.events)


def workflow(h: History, wf: str, status: str, steps: tuple[str, ...] = ("a", "b")) -> None:
    h.invoke("wf", "wf-run", {"id": wf, "steps": list(steps)})
    getattr(h, status)("wf", "wf-run", {"id": wf})


def finals(h: History, wfs: dict[str, Any], counts: dict[str, int]) -> None:
    for wf_id, final in wfs.items():
        h.invoke("final", "wf-final", {"id": wf_id})
        h.ok("final", "wf-final", {"id": wf_id, **final})
    h.invoke("final", "wf-effects", {})
    h.ok("final", "wf-effects", {"counts": counts})


def test_workflow_rules() -> None:
    h = History()
    workflow(h, "w1", "ok")      # completed, each step once: fine
    workflow(h, "w2", "ok")      # b done but never ran: lost; a ran twice: duplicated
    workflow(h, "w3", "info")    # unknown run, not there: fine
    workflow(h, "w4", "fail")    # failed run whose step ran anyway: unexpected
    workflow(h, "w5", "ok")      # ambiguous step, ran once: fine; still running: stuck
    workflow(h, "w6", "ok")      # acknowledged, unknown to the daemon: lost
    finals(h, {
        "w1": {"state": "completed", "steps": {"a": "done", "b": "done"}},
        "w2": {"state": "completed", "steps": {"a": "done", "b": "done"}},
        "w3": {"missing": True},
        "w4": {"missing": True},
        "w5": {"state": "running", "steps": {"a": "ambiguous", "b": "pending"}},
        "w6": {"missing": True},
    }, {"w1/a": 1, "w1/b": 1, "w2/a": 2, "w4/a": 1, "w5/a": 1})
    res = check(h.events)
    assert [(x.get("workflow"), x.get("step")) for x in res.lost] == [("w2", "b"), ("w6", None)]
    assert [(x["workflow"], x["step"]) for x in res.duplicated] == [("w2", "a")]
    assert [x["effect"] for x in res.unexpected] == ["w4/a"]
    assert [x["workflow"] for x in res.stuck] == ["w5"]
