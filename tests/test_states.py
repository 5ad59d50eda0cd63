"""Lifecycle states: every transition goes through Node.transition, and impossible ones are loud."""

from __future__ import annotations

import pytest

from daemon.core.spec import SupervisorSpec, WorkerSpec
from daemon.core.states import ALIVE, ALLOWED, DOWN, IllegalTransition, State
from daemon.core.tree import Supervisor, Worker

STARTING, RUNNING, STOPPING, STOPPED, FAILED = (
    State.STARTING,
    State.RUNNING,
    State.STOPPING,
    State.STOPPED,
    State.FAILED,
)

LEGAL = [
    (STOPPED, STARTING),
    (FAILED, STARTING),
    (STARTING, RUNNING),
    (STARTING, STOPPING),
    (STARTING, STOPPED),
    (STARTING, FAILED),
    (RUNNING, STOPPING),
    (RUNNING, STOPPED),
    (RUNNING, FAILED),
    (STOPPING, STOPPED),
    (STOPPING, FAILED),
]

ILLEGAL = [
    (STOPPED, RUNNING),  # a process runs only after it was started
    (STOPPED, STOPPING),
    (STOPPED, STOPPED),
    (STOPPED, FAILED),
    (FAILED, RUNNING),
    (FAILED, STOPPING),
    (FAILED, STOPPED),
    (FAILED, FAILED),
    (STARTING, STARTING),
    (RUNNING, STARTING),  # a running process is stopped before it starts again
    (RUNNING, RUNNING),
    (STOPPING, STARTING),
    (STOPPING, RUNNING),  # a stop cannot be taken back
    (STOPPING, STOPPING),
]


def worker(state: State) -> Worker:
    node = Worker(parent=None, spec=WorkerSpec("w", command=("true",)))
    node.state = state
    return node


def test_the_two_tables_cover_every_pair_once():
    pairs = LEGAL + ILLEGAL
    assert len(pairs) == len(set(pairs)) == len(State) ** 2


def test_allowed_matches_the_legal_table():
    assert {(a, b) for a, targets in ALLOWED.items() for b in targets} == set(LEGAL)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_illegal_transition_raises_and_leaves_the_state(src, dst):
    node = worker(src)
    with pytest.raises(IllegalTransition) as info:
        node.transition(dst)
    assert str(info.value) == f"w: {src} -> {dst}"
    assert node.state is src


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
def test_legal_transition_moves(src, dst):
    node = worker(src)
    node.transition(dst)
    assert node.state is dst


def test_supervisor_nodes_check_transitions_too():
    node = Supervisor(parent=None, spec=SupervisorSpec("s"))
    assert node.state is STOPPED
    with pytest.raises(IllegalTransition) as info:
        node.transition(RUNNING)
    assert str(info.value) == "s: stopped -> running"
    node.transition(STARTING)
    node.transition(RUNNING)
    assert node.state is RUNNING


def test_alive_and_down_partition_the_states():
    assert set(State) == ALIVE | DOWN
    assert not ALIVE & DOWN
    assert {STOPPED, FAILED} == DOWN


def test_illegal_transition_is_a_runtime_error():
    assert issubclass(IllegalTransition, RuntimeError)
