"""The reload diff is pure: two specs in, a plan out."""

from __future__ import annotations

from daemon.core.reload import Plan, diff
from daemon.core.spec import RestartType, Strategy, SupervisorSpec, WorkerSpec


def w(name: str, *cmd: str, **kw) -> WorkerSpec:
    return WorkerSpec(name=name, command=cmd or ("sleep", "1000"), **kw)


def tree(*children, **kw) -> SupervisorSpec:
    return SupervisorSpec(name="root", children=tuple(children), **kw)


def test_identical_trees_change_nothing() -> None:
    t = tree(w("a"), SupervisorSpec("s", children=(w("b"),)))
    assert diff(t, t).empty


def test_added_removed_and_changed_workers() -> None:
    old = tree(w("a"), w("b"), w("c"))
    new = tree(w("a"), w("c", "sleep", "5"), w("d"))
    plan = diff(old, new)
    assert plan.remove == ("b",)
    assert plan.replace == (w("c", "sleep", "5"),)
    assert plan.add == (("root", 2, w("d")),)
    assert plan.update == ()


def test_added_child_keeps_its_place_in_order() -> None:
    plan = diff(tree(w("a"), w("c")), tree(w("a"), w("b"), w("c")))
    assert plan.add == (("root", 1, w("b")),)


def test_supervisor_settings_update_in_place_and_children_recurse() -> None:
    old = tree(SupervisorSpec("s", children=(w("b"), w("c"))))
    new = tree(SupervisorSpec("s", strategy=Strategy.ONE_FOR_ALL, intensity=7, children=(w("b"),)))
    plan = diff(old, new)
    assert [s.name for s in plan.update] == ["s"]
    assert plan.remove == ("c",)
    assert plan.replace == ()


def test_root_settings_change_is_an_update() -> None:
    plan = diff(tree(w("a")), tree(w("a"), intensity=9))
    assert [s.name for s in plan.update] == ["root"]


def test_kind_change_and_move_are_remove_then_add() -> None:
    old = tree(w("x"), SupervisorSpec("s", children=(w("m"),)))
    new = tree(SupervisorSpec("x", children=(w("y"),)), SupervisorSpec("s"), w("m"))
    plan = diff(old, new)
    assert set(plan.remove) == {"x", "m"}
    added = {spec.name: (parent, index) for parent, index, spec in plan.add}
    assert added == {"x": ("root", 0), "m": ("root", 2)}  # y comes with x, not on its own


def test_removing_a_supervisor_removes_its_subtree_once() -> None:
    old = tree(SupervisorSpec("s", children=(w("a"), w("b"))))
    assert diff(old, tree()).remove == ("s",)


def test_restart_type_change_is_a_replace() -> None:
    plan = diff(tree(w("a")), tree(w("a", restart=RestartType.TEMPORARY)))
    assert plan.replace == (w("a", restart=RestartType.TEMPORARY),)
    assert plan.summary() == {"removed": [], "updated": [], "restarted": ["a"], "added": [], "reordered": []}
    assert isinstance(plan, Plan)


def test_a_pure_reorder_is_a_reorder_and_nothing_else() -> None:
    old = tree(w("a"), w("b"), SupervisorSpec("s", children=(w("x"), w("y"))))
    new = tree(SupervisorSpec("s", children=(w("y"), w("x"))), w("a"), w("b"))
    plan = diff(old, new)
    assert plan.reorder == (("root", ("s", "a", "b")), ("s", ("y", "x")))
    assert (plan.remove, plan.update, plan.replace, plan.add) == ((), (), (), ())
    assert not plan.empty
    assert plan.summary()["reordered"] == ["root", "s"]


def test_additions_and_removals_alone_are_no_reorder() -> None:
    plan = diff(tree(w("a"), w("b"), w("c")), tree(w("new"), w("a"), w("c"), w("last")))
    assert plan.reorder == ()
    assert plan.remove == ("b",)
