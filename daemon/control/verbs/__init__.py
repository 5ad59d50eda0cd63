"""The registry of control verbs: one module per verb (its permission, daemon-side handler, CLI arguments and
rendering), listed here in the order ``foundationctl --help`` shows them. The control server's handler table and
permission sets and ``foundationctl``'s parser are both built from ``VERBS``; docs/protocol.md's verb list is
checked against it by tests/test_verb_registry.py."""

from __future__ import annotations

from daemon.control.verbs import (
    attach,
    breaker,
    breakers,
    call,
    cluster,
    detach,
    doctor,
    errors,
    events,
    flag,
    flags,
    history,
    limits,
    logs,
    metrics,
    migrate,
    pid,
    reload,
    restart,
    rollout,
    rollouts,
    save,
    send,
    services,
    shutdown,
    signal,
    start,
    state,
    status,
    stop,
    task,
    upgrade,
    workflow,
)
from daemon.control.verbs.base import Verb

VERBS: dict[str, Verb] = {
    module.VERB.name: module.VERB
    for module in (status, start, stop, restart, signal, pid, attach, detach, save, shutdown, send, call, state,
                   reload, logs, events, history, metrics, doctor, workflow, task, flags, flag, migrate,
                   breakers, breaker, limits, services, errors,  # resilience (issue 14)
                   rollouts, rollout,
                   upgrade,  # in-place upgrade (issue 19)
                   cluster)  # more than one host (issue 18)
}

# Verbs later issues will add that a control_group member may already use (they answer unknown_verb until then).
FUTURE_READ_VERBS: frozenset[str] = frozenset()
READ_VERBS = frozenset({v.name for v in VERBS.values() if v.access == "read"}) | FUTURE_READ_VERBS
QUIET_VERBS = frozenset(v.name for v in VERBS.values() if v.access == "quiet")
READ_OPS = {v.name: v.read_ops for v in VERBS.values() if v.read_ops}  # e.g. workflow status: read, workflow run: not
