"""The plan core (daemon/core/plan.py) over a tree driven by fake processes: phases, settling, refusals.
Pure: no processes, no loop; the runner that carries plans out on the loop is covered by tests/test_reload.py."""

from __future__ import annotations

import pytest

from daemon.core import plan as plans
from daemon.core.reload import diff
from daemon.core.spec import SupervisorSpec, WorkerSpec
from ipc.errors import ErrorCode, FoundationError
from tests.fakeshell import FakeShell


def w(name: str, *cmd: str) -> WorkerSpec:
    return WorkerSpec(name=name, command=cmd or ("sleep", "1000"))


def root(*children: WorkerSpec | SupervisorSpec) -> SupervisorSpec:
    return SupervisorSpec(name="root", children=tuple(children))


def test_removals_come_in_a_phase_of_their_own_before_everything_else() -> None:
    old = root(w("a"), w("b"), SupervisorSpec("s", children=(w("c"),)))
    new = root(w("a", "sleep", "5"), SupervisorSpec("s", children=(w("c"), w("d"))), w("e"))
    phases = plans.phases(diff(old, new))
    assert phases[0] == (plans.Detach("b"),)
    assert plans.Replace(w("a", "sleep", "5")) in phases[1]
    assert plans.Attach("s", 1, w("d")) in phases[1]
    assert plans.Attach("root", 2, w("e")) in phases[1]
    assert all(not isinstance(step, plans.Detach) for step in phases[1])


def test_an_empty_plan_has_no_phases_and_a_plan_without_removals_one() -> None:
    spec = root(w("a"))
    assert plans.phases(diff(spec, spec)) == []
    assert len(plans.phases(diff(spec, root(w("a"), w("b"))))) == 1


def test_a_detach_settles_when_the_child_is_gone_and_a_start_when_it_is_no_longer_in_transit() -> None:
    shell = FakeShell(root(w("a"), w("b")))
    shell.boot()
    tree = shell.tree
    detach = plans.Detach("b")
    assert not plans.settled(detach, tree)
    shell.request("detach", "b")
    assert not plans.settled(detach, tree)  # SIGTERM sent, the process has not exited yet
    shell.exit_after_signal("b")
    assert plans.settled(detach, tree)
    replace = plans.Replace(w("a", "sleep", "5"))
    shell._run(tree.replace(replace.spec))
    assert not plans.settled(replace, tree)  # stopping the old process
    shell.exit_after_signal("a")
    assert plans.settled(replace, tree)


def test_check_refuses_a_plan_that_run_time_changes_made_impossible() -> None:
    old = root(w("a"), w("b"))
    shell = FakeShell(old)
    shell.boot()
    shell.attach("root", w("c"))  # attached at run time; the new config adds a "c" of its own
    with pytest.raises(FoundationError) as exc:
        plans.check(diff(old, root(w("a"), w("b"), w("c"))), shell.tree)
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert "'c'" in exc.value.message
    assert "attached at run time" in exc.value.message
    shell.request("detach", "a")
    shell.stop_signalled()
    with pytest.raises(FoundationError, match="'a' changed in the config but was detached"):
        plans.check(diff(old, root(w("a", "sleep", "9"), w("b"))), shell.tree)


def test_a_removal_frees_its_subtree_names_for_additions() -> None:
    old = root(SupervisorSpec("s", children=(w("x"),)))
    new = root(w("x"))  # x moves from under s to the root
    shell = FakeShell(old)
    shell.boot()
    plans.check(diff(old, new), shell.tree)  # no error: the removal of s frees x
