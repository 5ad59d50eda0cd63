"""Carries out a plan (``daemon/core/plan.py``) on the live tree: one phase at a time, each applied, then waited
for until every step of it has settled; the first error stops the run and is reported.

Reload uses it; rollouts will too. Nothing here decides: the steps and the "settled" rule are the core's.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.control.waiters import Waiters
from daemon.core import plan as plans
from daemon.core.protocol import Action
from daemon.core.tree import SupervisionTree
from ipc.errors import FoundationError

Done = Callable[[FoundationError | None], None]


class PlanRunner:
    def __init__(self, tree: SupervisionTree, apply: Callable[[list[Action]], None], waiters: Waiters) -> None:
        self._tree, self._apply, self._waiters = tree, apply, waiters

    def run(self, phases: list[plans.Phase], done: Done) -> None:
        """Apply ``phases`` in order; ``done(None)`` once the last has settled, ``done(error)`` at the first error
        (the phases after it are not applied)."""
        if not phases:
            done(None)
            return
        phase, rest = phases[0], phases[1:]
        try:
            for step in phase:
                self._carry_out(step)
        except FoundationError as exc:  # a shutdown, or an operator's attach/detach, came in meanwhile
            done(exc)
            return
        self._waiters.when(lambda: all(plans.settled(step, self._tree) for step in phase),
                           lambda: self.run(rest, done))

    def _carry_out(self, step: plans.Step) -> None:
        tree = self._tree
        match step:
            case plans.Detach(name):
                if tree.find_quiet(name) is not None:
                    self._apply(tree.request("detach", name))
            case plans.UpdateSettings(spec):
                tree.update_settings(spec)
            case plans.Replace(spec):
                self._apply(tree.replace(spec))
            case plans.Attach(parent, index, spec):
                self._apply(tree.attach(parent, spec, index))
            case plans.Reorder(parent, order):
                tree.reorder(parent, order)
