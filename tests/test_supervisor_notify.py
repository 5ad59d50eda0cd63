"""The pure core and sd_notify's EXTEND_TIMEOUT_USEC: start and stop deadlines a child extends, on a fake clock.

FakeShell spawns ``ready = "notify"`` workers still starting, as the daemon does; ``sh.ready(name)`` is READY=1 and
``sh.extend(name, s)`` is EXTEND_TIMEOUT_USEC of ``s`` seconds. Nothing here runs a process or sleeps.
"""

from __future__ import annotations

import math

import pytest
from fakeshell import SIGKILL, FakeShell, kinds, timers

from daemon.core.protocol import ExtendTimeout, Log
from daemon.core.spec import BRUTAL_KILL, INFINITY, SupervisorSpec, WorkerSpec

T0 = 1000.0  # FakeShell's clock at boot


def W(name: str, **kw) -> WorkerSpec:
    return WorkerSpec(name, command=("/bin/true",), **kw)


def notify(name: str, **kw) -> WorkerSpec:
    return W(name, ready="notify", **kw)


def boot(*children: WorkerSpec, **kw) -> FakeShell:
    sh = FakeShell(SupervisorSpec("root", children=children, **kw), start=T0)
    sh.boot()
    return sh


def messages(actions, level: str | None = None) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log) and (level is None or a.level == level)]


# ---- while starting ----


def test_extend_moves_the_start_deadline_past_start_timeout_and_ready_still_completes_the_start():
    sh = boot(notify("svc", start_timeout=10.0), W("next"))
    assert sh.state("svc") == "starting"
    assert "next" not in sh.live
    sh.advance(4)
    sh.extend("svc", 20)  # deadline T0 + 24, past the 10 s start_timeout
    assert kinds(sh.advance_to(T0 + 10)) == []  # the original deadline passes: no kill
    assert kinds(sh.advance_to(T0 + 23.9)) == []
    assert sh.state("svc") == "starting"
    assert kinds(sh.ready("svc")) == ["spawn next"]  # the sibling waited for READY=1, as before
    assert sh.state("svc") == "running"
    assert sh.timers == {}  # the re-armed start timer went with the start
    assert kinds(sh.advance(1000)) == []


def test_an_extended_start_that_runs_out_kills_the_child_at_the_new_deadline():
    sh = boot(notify("svc", start_timeout=10.0), W("next"))
    sh.advance(4)
    sh.extend("svc", 20)
    assert kinds(sh.advance_to(T0 + 23.999)) == []
    out = sh.advance_to(T0 + 24)
    assert kinds(out) == ["kill svc"]
    assert messages(out, "error") == ["svc was not ready within 24.0s (start_timeout 10.0s, extended by the child); "
                                      "killing it"]
    # ... and the kill is a failure to start, as after a plain start_timeout: at boot, the root fails.
    sh.exit_after_signal("svc")
    assert "next" not in sh.live
    assert sh.halt is not None
    assert sh.halt.code == 1


def test_each_extension_counts_from_now_and_never_moves_the_deadline_earlier():
    sh = boot(notify("svc", start_timeout=10.0))
    sh.advance(4)
    sh.extend("svc", 20)  # T0 + 24
    sh.advance(2)
    sh.extend("svc", 5)  # T0 + 11 would be earlier: the deadline stays T0 + 24
    assert kinds(sh.advance_to(T0 + 23.9)) == []
    sh.extend("svc", 10)  # from now: T0 + 33.9
    assert kinds(sh.advance_to(T0 + 33.8)) == []
    assert kinds(sh.advance_to(T0 + 33.9)) == ["kill svc"]


def test_an_extension_shorter_than_the_time_left_changes_nothing():
    sh = boot(notify("svc", start_timeout=10.0))
    out = sh.extend("svc", 1)
    assert out == []
    out = sh.advance_to(T0 + 10)
    assert kinds(out) == ["kill svc"]
    assert messages(out, "error") == ["svc was not ready within 10.0s; killing it"]  # the usual wording


def test_extensions_neither_start_nor_cancel_timers():
    """A chatty child costs nothing: one live timer per child, re-armed only when it fires early."""
    sh = boot(notify("svc", start_timeout=10.0))
    before = dict(sh.timers)
    for i in range(50):
        sh.advance(0.1)
        out = sh.extend("svc", 20 + i)
        assert timers(out) == []
        assert kinds(out) == []
        assert messages(out, "debug") == [f"svc extended its start timeout to {20 + i}s from now"]
    assert sh.timers == before


def test_after_ready_an_extension_is_ignored():
    sh = boot(notify("svc", start_timeout=10.0))
    sh.ready("svc")
    assert sh.extend("svc", 60) == []
    assert sh.timers == {}
    assert sh.state("svc") == "running"


def test_an_extension_from_an_old_pid_or_with_a_bad_value_is_ignored():
    sh = boot(notify("svc", start_timeout=10.0))
    pid = sh.pid("svc")
    for event in (ExtendTimeout("svc", pid + 1, 60), ExtendTimeout("nobody", pid, 60),
                  ExtendTimeout("svc", pid, -1.0), ExtendTimeout("svc", pid, math.nan),
                  ExtendTimeout("svc", pid, math.inf)):
        assert sh.send(event) == [], event
    assert kinds(sh.advance_to(T0 + 10)) == ["kill svc"]


def test_an_extension_for_an_exec_child_is_ignored():
    sh = boot(W("plain"))
    assert sh.extend("plain", 60) == []
    assert sh.timers == {}


# ---- while stopping ----


def test_extend_while_stopping_moves_the_sigkill_deadline():
    sh = boot(W("svc", shutdown=5.0))
    assert kinds(sh.request("stop", "svc")) == ["term svc"]
    sh.advance(3)
    sh.extend("svc", 10)  # SIGKILL at T0 + 13 instead of T0 + 5
    assert kinds(sh.advance_to(T0 + 12.9)) == []
    out = sh.advance_to(T0 + 13)
    assert kinds(out) == ["kill svc"]
    assert messages(out, "warning") == ["svc did not stop within 13.0s (shutdown 5.0s, extended by the child); "
                                        "sending SIGKILL"]
    sh.exit_after_signal("svc")
    assert sh.state("svc") == "stopped"
    assert sh.timers == {}


def test_a_child_that_stops_within_its_extension_is_not_killed():
    sh = boot(W("a"), W("svc", shutdown=5.0))
    sh.shutdown()  # reverse order: svc first, and a waits for it
    sh.advance(4)
    sh.extend("svc", 30)
    assert kinds(sh.advance(20)) == []
    assert sh.signalled["svc"] == [15]  # SIGTERM only
    out = sh.exit_after_signal("svc")
    assert kinds(out) == ["term a"]
    assert list(sh.timers.values()) == [sh.now + 5.0]  # a's own 5 s, untouched


@pytest.mark.parametrize("shutdown", [BRUTAL_KILL, INFINITY])
def test_a_stop_without_a_sigkill_deadline_has_nothing_to_extend(shutdown):
    sh = boot(W("svc", shutdown=shutdown))
    sh.request("stop", "svc")
    assert sh.extend("svc", 10) == []
    assert sh.timers == {}


def test_after_sigkill_an_extension_changes_nothing():
    sh = boot(W("svc", shutdown=5.0))
    sh.request("stop", "svc")
    assert kinds(sh.advance(5)) == ["kill svc"]
    assert sh.extend("svc", 10) == []
    assert sh.timers == {}


def test_a_start_extension_does_not_carry_over_into_the_stop():
    """Stopped while still starting (a shutdown overtakes READY=1): the stop has its own shutdown deadline."""
    sh = boot(W("first"), notify("svc", start_timeout=10.0, shutdown=5.0))
    sh.extend("svc", 100)
    assert kinds(sh.shutdown()) == ["term svc"]
    out = sh.advance(5)
    assert kinds(out) == ["kill svc"]
    assert messages(out, "warning") == ["svc did not stop within 5.0s; sending SIGKILL"]
    assert sh.signalled["svc"] == [15, SIGKILL]
