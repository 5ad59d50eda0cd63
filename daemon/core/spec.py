"""Plain, frozen descriptions of a supervision tree: what the config produces and the core consumes.

Specs are values: the core never mutates them, and a reload compares old and new specs by equality
to decide which children changed. Everything here is data; no I/O, no processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Strategy(StrEnum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class RestartType(StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted


# Shutdown is seconds from SIGTERM to SIGKILL; these two sentinels are OTP's other two choices.
BRUTAL_KILL = "brutal_kill"
INFINITY = "infinity"
Shutdown = float | str


@dataclass(frozen=True)
class Backoff:
    """Optional per-child restart delay: exponential with jitter, capped, reset after a stable run.

    Off by default, as in OTP. The delay only postpones the respawn; the restart is counted toward
    the supervisor's intensity when it is decided, so a crash loop still escalates.
    """

    initial: float = 0.1
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1  # fraction of the delay, drawn uniformly in [-jitter, +jitter]
    reset_after: float = 10.0  # a child running this long starts again from `initial`


@dataclass(frozen=True)
class WorkerSpec:
    """A leaf of the tree: an OS command, or a Python agent class run by the agent runtime."""

    name: str
    command: tuple[str, ...] = ()
    agent: str | None = None  # "module:Class"
    restart: RestartType = RestartType.PERMANENT
    shutdown: Shutdown = 5.0
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    backoff: Backoff | None = None
    mailbox: int = 10_000  # an agent's bound on undone messages; past it, send fails with mailbox_full
    liveness: float = 10.0  # an agent silent (no heartbeat) this long is killed and restarted
    # Readiness, systemd-style: "exec" is ready once running; "notify" once it sends READY=1 on its own
    # NOTIFY_SOCKET (within start_timeout seconds, else it failed to start); an agent is ready at hello.
    ready: str = "exec"
    # When this child's restart would exceed its supervisor's intensity: "escalate" (OTP: the supervisor fails) or
    # "park" (it is left down with its reason, like supervisord's FATAL, until an operator starts it again).
    on_intensity: str = "escalate"
    start_timeout: float = 10.0
    watchdog: float | None = None  # with ready = "notify": WATCHDOG=1 at least this often, else restarted
    # Users and limits (applied to the child only).
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    limits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard): nofile, as, cpu, nproc, ...
    max_memory: int | None = None  # bytes of RSS; past it the child is restarted
    # Output also to a file (daemon/core/logfiles.py): None takes [daemon] log_dir's <name>.log if there is a log_dir,
    # False none, a string that path; rotated past log_max_size bytes, log_keep rotated files kept (None: [daemon]'s).
    log_file: str | bool | None = None
    log_max_size: int | None = None
    log_keep: int | None = None

    @property
    def is_supervisor(self) -> bool:
        return False


@dataclass(frozen=True)
class SupervisorSpec:
    """An inner node: restarts its children by `strategy`, fails upward past `intensity` in `period`."""

    name: str
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 3
    period: float = 5.0
    restart: RestartType = RestartType.PERMANENT
    children: tuple[ChildSpec, ...] = field(default=())

    @property
    def is_supervisor(self) -> bool:
        return True


ChildSpec = WorkerSpec | SupervisorSpec


def worker_specs(spec: ChildSpec) -> list[WorkerSpec]:
    """Every worker in ``spec``'s subtree (``spec`` itself if it is one), in start order."""
    if isinstance(spec, SupervisorSpec):
        return [worker for child in spec.children for worker in worker_specs(child)]
    return [spec]
