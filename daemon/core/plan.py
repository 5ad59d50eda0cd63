"""Plans of changes to a running tree, as data: what a reload (and later a rollout) applies, phase by phase.

    Plan (core.reload.diff) ──> phases() ──> [[Detach...], [UpdateSettings, Replace, Attach, Reorder...]]
                                                 │ the runner applies a phase, then waits until settled()
                                                 └─ holds for every step of it, then the next phase

Pure: steps are frozen values and the decisions read the tree without changing it; the runner in
``daemon/services/plan_runner.py`` carries the steps out on the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.reload import Plan
from daemon.core.spec import ChildSpec, SupervisorSpec, WorkerSpec
from daemon.core.states import State
from daemon.core.tree import SupervisionTree, Supervisor, node_names, spec_names
from ipc.errors import ErrorCode, FoundationError


@dataclass(frozen=True)
class Detach:
    name: str


@dataclass(frozen=True)
class UpdateSettings:
    spec: SupervisorSpec


@dataclass(frozen=True)
class Replace:
    spec: WorkerSpec


@dataclass(frozen=True)
class Attach:
    parent: str
    index: int | None
    spec: ChildSpec


@dataclass(frozen=True)
class Reorder:
    parent: str
    order: tuple[str, ...]


Step = Detach | UpdateSettings | Replace | Attach | Reorder
Phase = tuple[Step, ...]


def phases(plan: Plan) -> list[Phase]:
    """Removals first, so that a moved name is free; then settings, replacements, additions and orders."""
    first: Phase = tuple(Detach(name) for name in plan.remove)
    second: Phase = (
        *(UpdateSettings(spec) for spec in plan.update),
        *(Replace(worker) for worker in plan.replace),
        *(Attach(parent, index, spec) for parent, index, spec in plan.add),
        *(Reorder(parent, order) for parent, order in plan.reorder),
    )
    return [phase for phase in (first, second) if phase]


def settled(step: Step, tree: SupervisionTree) -> bool:
    """Whether the step's effect is complete: a detached child is gone, a started one is no longer in transit."""
    match step:
        case Detach(name):
            return tree.find_quiet(name) is None
        case Replace(spec) | Attach(_, _, spec):
            node = tree.find_quiet(spec.name)
            return node is None or node.state not in (State.STARTING, State.STOPPING)
        case _:
            return True


def check(plan: Plan, tree: SupervisionTree) -> None:
    """Refuse, before anything changes, a plan that run-time attach/detach made impossible to carry out."""
    removed = [node for name in plan.remove if (node := tree.find_quiet(name)) is not None]
    freed = {n for node in removed for n in node_names(node)}  # a removal frees its whole subtree's names
    changed: list[ChildSpec] = [*plan.update, *plan.replace]
    for spec in changed:
        node = tree.find_quiet(spec.name)
        if node is None or isinstance(node, Supervisor) != isinstance(spec, SupervisorSpec):
            raise FoundationError(ErrorCode.INVALID_CONFIG, f"{spec.name!r} changed in the config but was detached "
                                  "at run time: attach it again, or take it out of the config")
    for parent, _, spec in plan.add:
        if not isinstance(tree.find_quiet(parent), Supervisor):
            raise FoundationError(ErrorCode.INVALID_CONFIG, f"{spec.name!r} goes under {parent!r}, which was "
                                  "detached at run time: attach it again, or take it out of the config")
        for name in spec_names(spec):
            if name not in freed and tree.find_quiet(name) is not None:
                raise FoundationError(ErrorCode.INVALID_CONFIG, f"the config adds {name!r}, but a child of that "
                                      "name was attached at run time: detach it first")

