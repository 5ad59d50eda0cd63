"""The handover file of an in-place upgrade (``foundationctl upgrade``, SIGUSR2): plain data, versioned, pure.

    old image: App ──collect──> Handover ──to_plain──> JSON in <state dir>/upgrade.json ──execve(--adopt FILE)─┐
    new image: Handover <──from_plain── JSON file (read by daemon/services/upgrade.py) <──────────────────────┘
               └─> ProcessShell adopts the pidfds and output pipes, the guardian keeps its pipe, the broker takes
                   back its sessions, mailboxes, timers and monitors (daemon/broker/resume.py), the tree boots
                   with each worker's Spawn answered by its running pid (agents and durable dynamic children
                   included), then restart counts and intensity histories are put back.

Descriptors are numbers here: the old image clears close-on-exec on them, the new one adopts them. Times are
``CLOCK_MONOTONIC`` readings, valid across ``execve`` (same process, same clock). ``VERSION`` is the format's;
a daemon refuses a file with a newer version, naming both (an older foundationd cannot adopt a newer tree), and
reads older ones. Version 2 added ``broker`` (agents' sessions, mailboxes, timers, monitors: plain data whose
shape daemon/broker/resume.py owns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERSION = 2
FILE_NAME = "upgrade.json"


class HandoverError(Exception):
    """The file cannot be adopted: unreadable, malformed, or a format this foundationd does not understand."""


@dataclass(frozen=True)
class HandedWorker:
    name: str
    pid: int
    pidfd: int
    pipes: tuple[tuple[int, str], ...]  # (read end, "stdout" | "stderr"), each still open
    restarts: int = 0


@dataclass(frozen=True)
class HandedSupervisor:
    name: str
    restarts: int = 0
    history: tuple[float, ...] = ()  # restart times, for the intensity window


@dataclass(frozen=True)
class HandedDown:
    """A child (worker or supervisor) that is down: stopped by the operator, ended, failed or parked. The new image
    does not start it at boot and puts its state back."""

    name: str
    state: str  # "stopped" | "failed"
    held: bool  # stopped by the operator (or parked): strategies leave it down until it is started
    restarts: int = 0
    last_exit: str | None = None
    last_exit_at: float | None = None
    restart_at: float | None = None  # waiting for a restart (backoff): when it is due (monotonic)
    backoff_attempt: int = 0


@dataclass(frozen=True)
class HandedAttach:
    """A child attached at run time that is not durable: attached again at the same place, its process adopted.
    ``spec`` is the attach's spec as plain data; ``kind`` says whose it is: ``operator`` (``attach``, what ``save``
    writes) or ``task`` (a workflow's command step, daemon/services/tasks.py, with its ``task`` state)."""

    parent: str
    index: int
    spec: dict[str, Any]
    kind: str = "operator"
    ephemeral: bool = False
    task: dict[str, Any] | None = None


@dataclass(frozen=True)
class HandedGuardian:
    pid: int
    pidfd: int
    write_fd: int  # foundationd's end of the guardian's pipe: kept open across execve, so no EOF
    groups: tuple[int, ...]
    pipes: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Handover:
    generation: int  # 1 for the first upgrade of this pid, +1 at each
    argv: tuple[str, ...]  # how the old image was started (for the fallback)
    workers: tuple[HandedWorker, ...] = ()
    supervisors: tuple[HandedSupervisor, ...] = ()
    guardian: HandedGuardian | None = None
    started_at: float = 0.0  # when the upgrade began (monotonic), for its duration
    failed: str | None = None  # set on the fallback's handover: why the new image did not adopt
    broker: dict[str, Any] | None = None  # (version 2) the broker's state, daemon/broker/resume.py's snapshot
    down: tuple[HandedDown, ...] = ()  # (version 2)
    attached: tuple[HandedAttach, ...] = ()  # (version 2) in tree order: a parent before its children
    tasks_boot: str | None = None  # (version 2) the boot id of the tasks' records (daemon/services/tasks.py)
    # (version 2) workers running another version than their spec says (a rollout's): name -> {"agent", "env"}
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def fds(self) -> list[int]:
        """Every descriptor the new image adopts (close-on-exec cleared on each before execve)."""
        out = [fd for w in self.workers for fd in (w.pidfd, *(p for p, _ in w.pipes))]
        if self.guardian is not None:
            g = self.guardian
            out += [g.pidfd, g.write_fd, *(p for p, _ in g.pipes)]
        return out


def to_plain(h: Handover) -> dict[str, Any]:
    """Plain data (JSON types only); the shell writes it."""
    return {
        "version": h.version, "generation": h.generation, "argv": list(h.argv), "started_at": h.started_at,
        "failed": h.failed, "extra": h.extra, "broker": h.broker, "tasks_boot": h.tasks_boot, "versions": h.versions,
        "down": [{"name": d.name, "state": d.state, "held": d.held, "restarts": d.restarts, "last_exit": d.last_exit,
                  "last_exit_at": d.last_exit_at, "restart_at": d.restart_at, "backoff_attempt": d.backoff_attempt}
                 for d in h.down],
        "attached": [{"parent": a.parent, "index": a.index, "spec": a.spec, "kind": a.kind, "ephemeral": a.ephemeral,
                      "task": a.task} for a in h.attached],
        "workers": [{"name": w.name, "pid": w.pid, "pidfd": w.pidfd, "pipes": [list(p) for p in w.pipes],
                     "restarts": w.restarts} for w in h.workers],
        "supervisors": [{"name": s.name, "restarts": s.restarts, "history": list(s.history)}
                        for s in h.supervisors],
        "guardian": None if h.guardian is None else {
            "pid": h.guardian.pid, "pidfd": h.guardian.pidfd, "write_fd": h.guardian.write_fd,
            "groups": list(h.guardian.groups), "pipes": [list(p) for p in h.guardian.pipes]},
    }


def from_plain(data: Any) -> Handover:
    """The handover from what the file held; HandoverError naming what is wrong (a newer format: both versions)."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise HandoverError("handover file has no format version")
    if data["version"] > VERSION:
        raise HandoverError(f"handover state format version {data['version']} is newer than this foundationd "
                            f"understands (version {VERSION}): upgrade to a foundationd that reads it")
    if data["version"] < 1:
        raise HandoverError(f"handover state format version {data['version']} is not a valid version")
    try:
        g = data["guardian"]
        return Handover(
            version=data["version"], generation=int(data["generation"]), argv=tuple(data["argv"]),
            started_at=float(data.get("started_at", 0.0)), failed=data.get("failed"), extra=dict(data["extra"]),
            broker=_broker(data.get("broker")), tasks_boot=data.get("tasks_boot"),
            versions={str(k): dict(v) for k, v in data.get("versions", {}).items()},
            down=tuple(_down(d) for d in data.get("down", [])),
            attached=tuple(_attach(a) for a in data.get("attached", [])),
            workers=tuple(HandedWorker(w["name"], int(w["pid"]), int(w["pidfd"]), _pipes(w["pipes"]),
                                       int(w["restarts"])) for w in data["workers"]),
            supervisors=tuple(HandedSupervisor(s["name"], int(s["restarts"]), tuple(float(t) for t in s["history"]))
                              for s in data["supervisors"]),
            guardian=None if g is None else HandedGuardian(int(g["pid"]), int(g["pidfd"]), int(g["write_fd"]),
                                                           tuple(int(x) for x in g["groups"]), _pipes(g["pipes"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HandoverError(f"handover file is malformed: {exc!r}") from None


def _down(raw: Any) -> HandedDown:
    if raw["state"] not in ("stopped", "failed"):
        raise ValueError(f"a child handed over down cannot be {raw['state']!r}")
    at, due = raw.get("last_exit_at"), raw.get("restart_at")
    return HandedDown(str(raw["name"]), raw["state"], bool(raw["held"]), int(raw["restarts"]), raw.get("last_exit"),
                      None if at is None else float(at), None if due is None else float(due),
                      int(raw.get("backoff_attempt", 0)))


def _attach(raw: Any) -> HandedAttach:
    if not isinstance(raw["spec"], dict) or raw.get("kind", "operator") not in ("operator", "task"):
        raise ValueError(f"an attached child handed over is malformed: {raw!r}")
    return HandedAttach(str(raw["parent"]), int(raw["index"]), raw["spec"], raw.get("kind", "operator"),
                        bool(raw.get("ephemeral", False)), raw.get("task"))


def _broker(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("sessions", "gaps", "monitors")):
        raise ValueError(f"broker state is not what version {VERSION} writes")
    return raw


def _pipes(raw: Any) -> tuple[tuple[int, str], ...]:
    out = tuple((int(fd), str(stream)) for fd, stream in raw)
    if any(stream not in ("stdout", "stderr") for _, stream in out):
        raise ValueError(f"unknown stream in {raw!r}")
    return out


def adopt_argv(argv: list[str], path: str) -> list[str]:
    """The new image's arguments: the old ones with any earlier ``--adopt FILE`` replaced by this one."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--adopt":
            skip = True
            continue
        if arg.startswith("--adopt="):
            continue
        out.append(arg)
    return [*out, "--adopt", path]
