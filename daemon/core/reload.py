"""What a reload changes: a pure diff of two supervision tree specs.

    old tree ─┐
              ├─> diff() ─> removals (detach, first)  ─> updates (supervisor settings, in place)
    new tree ─┘             replacements (restart with the new spec)   additions (attach at their place)
                            reorders (a supervisor's children in the new order, nothing restarts)

Children are matched by name (names are global in a tree). A worker whose spec is equal in both trees is
left alone: same process, same pid. A child that changed kind (worker <-> supervisor) or moved to another
supervisor is removed and added again. Removals come first so that a moved name is free when it is added.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from daemon.core.spec import ChildSpec, SupervisorSpec, WorkerSpec


@dataclass(frozen=True)
class Plan:
    remove: tuple[str, ...] = ()  # names, detached in this order
    update: tuple[SupervisorSpec, ...] = ()  # supervisors whose own settings changed (children aside)
    replace: tuple[WorkerSpec, ...] = ()  # workers restarted with a new spec
    add: tuple[tuple[str, int, ChildSpec], ...] = ()  # (parent, index among its new children, spec)
    reorder: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (supervisor, its children's names in the new order)

    @property
    def empty(self) -> bool:
        return not (self.remove or self.update or self.replace or self.add or self.reorder)

    def summary(self) -> dict[str, list[str]]:
        return {
            "removed": list(self.remove),
            "updated": [s.name for s in self.update],
            "restarted": [w.name for w in self.replace],
            "added": [spec.name for _, _, spec in self.add],
            "reordered": [parent for parent, _ in self.reorder],
        }


def diff(old: SupervisorSpec, new: SupervisorSpec) -> Plan:
    old_parent = _parents(old)
    new_parent = _parents(new)
    old_specs = _specs(old)
    new_specs = _specs(new)
    remove: list[str] = []
    update: list[SupervisorSpec] = []
    replace: list[WorkerSpec] = []
    add: list[tuple[str, int, ChildSpec]] = []
    for name, spec in old_specs.items():
        other = new_specs.get(name)
        gone = other is None or _kind(other) != _kind(spec) or new_parent.get(name) != old_parent.get(name)
        if gone and old_parent.get(name) is not None and not _inside_removed(name, old_parent, remove):
            remove.append(name)
    for name, spec in new_specs.items():
        before = old_specs.get(name)
        moved = before is None or _kind(before) != _kind(spec) or new_parent.get(name) != old_parent.get(name)
        parent = new_parent.get(name)
        if moved:
            if parent is not None and not _inside_added(name, new_parent, add):
                index = [c.name for c in _children(new_specs[parent])].index(name)
                add.append((parent, index, spec))
        elif isinstance(spec, WorkerSpec) and spec != before:
            replace.append(spec)
        elif isinstance(spec, SupervisorSpec) and isinstance(before, SupervisorSpec) and _settings(spec) != _settings(
            before
        ):
            update.append(spec)
    return Plan(tuple(remove), tuple(update), tuple(replace), tuple(add), _reordered(old_specs, new_specs))


def _reordered(old: dict[str, ChildSpec], new: dict[str, ChildSpec]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Supervisors in both trees whose children that stay (in both, under it) come in another order."""
    out = []
    for name, spec in new.items():
        before = old.get(name)
        if not (isinstance(spec, SupervisorSpec) and isinstance(before, SupervisorSpec)):
            continue
        order = tuple(c.name for c in spec.children)
        was = [c.name for c in before.children]
        staying = set(order) & set(was)
        if [n for n in order if n in staying] != [n for n in was if n in staying]:
            out.append((name, order))
    return tuple(out)


def _settings(spec: SupervisorSpec) -> SupervisorSpec:
    return dataclasses.replace(spec, children=())


def _kind(spec: ChildSpec) -> str:
    return "supervisor" if isinstance(spec, SupervisorSpec) else "worker"


def _children(spec: ChildSpec) -> tuple[ChildSpec, ...]:
    return spec.children if isinstance(spec, SupervisorSpec) else ()


def _specs(root: SupervisorSpec) -> dict[str, ChildSpec]:
    out: dict[str, ChildSpec] = {root.name: root}
    for child in root.children:
        out.update(_specs(child) if isinstance(child, SupervisorSpec) else {child.name: child})
    return out


def _parents(root: SupervisorSpec) -> dict[str, str | None]:
    out: dict[str, str | None] = {root.name: None}
    todo = [root]
    while todo:
        sup = todo.pop()
        for child in sup.children:
            out[child.name] = sup.name
            if isinstance(child, SupervisorSpec):
                todo.append(child)
    return out


def _inside_removed(name: str, parents: dict[str, str | None], removed: list[str]) -> bool:
    """A child of a removed supervisor goes with it; it needs no removal of its own."""
    parent = parents.get(name)
    while parent is not None:
        if parent in removed:
            return True
        parent = parents.get(parent)
    return False


def _inside_added(name: str, parents: dict[str, str | None], added: list[tuple[str, int, ChildSpec]]) -> bool:
    names = {spec.name for _, _, spec in added}
    parent = parents.get(name)
    while parent is not None:
        if parent in names:
            return True
        parent = parents.get(parent)
    return False
