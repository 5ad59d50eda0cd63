"""Workflow definitions (DESIGN 3.6): parsed and checked up front, shared by foundationctl and the agents.

    root step = {"task": {...}} | {"parallel": [step, ...]} | {"sequential": [step, ...]}
    task      = {"id", "action": "command"|"call"|"python", "args", "retry"?, "timeout"?, "idempotent"?}

Every error names the step it is about (``sequential[1].parallel[0] (task "b")``), so a file is fixed in one go.
Retry policies use Temporal's field names; ``retryable`` is the one classifier workflows (and later the resilience
services) share: infrastructure, timeout and unavailable errors are retried, business and validation never, and a
code listed in ``non_retryable_errors`` never. Pure: no IO, nothing but data in and out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("command", "call", "python")
TASK_KEYS = ("id", "action", "args", "retry", "timeout", "idempotent")
RETRY_KEYS = ("initial_interval", "backoff_coefficient", "maximum_interval", "maximum_attempts",
              "non_retryable_errors")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_TASKS = 10_000
RETRIED = frozenset({"infrastructure", "timeout", "unavailable"})
DEFAULT_TIMEOUT = 3600.0


class DefinitionError(ValueError):
    """The definition is not valid; the message names the step and the key."""


@dataclass(frozen=True)
class RetryPolicy:
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | None = None  # None: 100 x initial_interval, as Temporal's default
    maximum_attempts: int = 3  # 0: unlimited (Temporal's default); ours is 3 so that a broken step ends
    non_retryable_errors: tuple[str, ...] = ()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``, after ``attempt`` (>= 1) failed."""
        cap = self.maximum_interval if self.maximum_interval is not None else 100 * self.initial_interval
        return float(min(cap, self.initial_interval * self.backoff_coefficient ** max(0, attempt - 1)))

    def allows(self, attempts: int) -> bool:
        """Whether another attempt may follow ``attempts`` made ones."""
        return self.maximum_attempts == 0 or attempts < self.maximum_attempts


@dataclass(frozen=True)
class Task:
    id: str
    action: str
    args: dict[str, Any]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = DEFAULT_TIMEOUT
    idempotent: bool = False


def inline(task: Task) -> bool:
    """A ``python`` step run by the workflow's own process (``args.inline``), not by a task agent."""
    return task.action == "python" and task.args.get("inline") is True


@dataclass(frozen=True)
class Group:
    kind: str  # "parallel" | "sequential"
    steps: tuple[Step, ...]


Step = Task | Group


def retryable(error: dict[str, Any], policy: RetryPolicy) -> bool:
    """Whether a step that failed with ``error`` (``{"code", "category", ...}``) deserves another attempt."""
    if str(error.get("code")) in policy.non_retryable_errors:
        return False
    if error.get("retryable") is False:
        return False
    return str(error.get("category")) in RETRIED


def tasks(step: Step) -> Iterator[Task]:
    """Every task of ``step``, in the order the file lists them."""
    if isinstance(step, Task):
        yield step
    else:
        for child in step.steps:
            yield from tasks(child)


def parse(obj: Any) -> Step:
    """The root step of a definition (a JSON or TOML document already decoded); raises DefinitionError."""
    seen: set[str] = set()
    step = _step(obj, "root", seen)
    if len(seen) > MAX_TASKS:
        raise DefinitionError(f"root: {len(seen)} tasks; at most {MAX_TASKS}")
    return step


def _step(obj: Any, where: str, seen: set[str]) -> Step:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise DefinitionError(f"{where}: a step is an object with exactly one of 'task', 'parallel', 'sequential'")
    ((kind, body),) = obj.items()
    if kind == "task":
        return _task(body, where, seen)
    if kind in ("parallel", "sequential"):
        if not isinstance(body, list) or not body:
            raise DefinitionError(f"{where}.{kind}: a non-empty list of steps")
        return Group(kind, tuple(_step(s, f"{where}.{kind}[{i}]", seen) for i, s in enumerate(body)))
    raise DefinitionError(f"{where}: unknown step kind {kind!r}; one of 'task', 'parallel', 'sequential'")


def _task(body: Any, where: str, seen: set[str]) -> Task:
    if not isinstance(body, dict):
        raise DefinitionError(f"{where}.task: an object with 'id' and 'action'")
    tid = body.get("id")
    if not isinstance(tid, str) or not ID_RE.fullmatch(tid):
        raise DefinitionError(f"{where}.task.id: a name of letters, digits, '_', '.', '-' (up to 64), "
                              f"not {tid!r}")
    here = f'{where} (task "{tid}")'
    if tid in seen:
        raise DefinitionError(f"{here}: the id {tid!r} is used twice; task ids are unique in a workflow")
    seen.add(tid)
    unknown = sorted(set(body) - set(TASK_KEYS))
    if unknown:
        raise DefinitionError(f"{here}: unknown key {unknown[0]!r} (known: {', '.join(TASK_KEYS)})")
    action = body.get("action")
    if action not in ACTIONS:
        raise DefinitionError(f"{here}.action: one of {', '.join(ACTIONS)}, not {action!r}")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise DefinitionError(f"{here}.args: an object")
    _check_args(action, args, here)
    timeout = body.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise DefinitionError(f"{here}.timeout: a positive number of seconds, not {timeout!r}")
    idempotent = body.get("idempotent", False)
    if not isinstance(idempotent, bool):
        raise DefinitionError(f"{here}.idempotent: true or false, not {idempotent!r}")
    return Task(tid, action, args, _retry(body.get("retry", {}), here), float(timeout), idempotent)


def _check_args(action: str, args: dict[str, Any], here: str) -> None:
    if action == "command":
        command = args.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
            raise DefinitionError(f"{here}.args.command: a non-empty list of strings (argv)")
        env = args.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise DefinitionError(f"{here}.args.env: an object of strings")
        if "working_dir" in args and not isinstance(args["working_dir"], str):
            raise DefinitionError(f"{here}.args.working_dir: a path")
        if "limits" in args and not isinstance(args["limits"], dict):
            raise DefinitionError(f"{here}.args.limits: an object, as a child's limits in the config")
    elif action == "call":
        if not isinstance(args.get("agent"), str) or not args["agent"]:
            raise DefinitionError(f"{here}.args.agent: the name of the agent to call")
        if "msg" not in args:
            raise DefinitionError(f"{here}.args.msg: the message to send (any JSON value)")
    else:
        function = args.get("function")
        if not isinstance(function, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", function):
            raise DefinitionError(f"{here}.args.function: 'module:function', not {function!r}")
        if not isinstance(args.get("kwargs", {}), dict):
            raise DefinitionError(f"{here}.args.kwargs: an object")
        if not isinstance(args.get("inline", False), bool):
            raise DefinitionError(f"{here}.args.inline: true (run it in the workflow's own process) or false")


def _retry(obj: Any, here: str) -> RetryPolicy:
    if not isinstance(obj, dict):
        raise DefinitionError(f"{here}.retry: an object with {', '.join(RETRY_KEYS)}")
    unknown = sorted(set(obj) - set(RETRY_KEYS))
    if unknown:
        raise DefinitionError(f"{here}.retry: unknown key {unknown[0]!r} (Temporal's names: {', '.join(RETRY_KEYS)})")
    values: dict[str, Any] = {}
    for key in ("initial_interval", "backoff_coefficient", "maximum_interval"):
        if key in obj:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise DefinitionError(f"{here}.retry.{key}: a number >= 0, not {value!r}")
            values[key] = float(value)
    if values.get("backoff_coefficient", 2.0) < 1:
        raise DefinitionError(f"{here}.retry.backoff_coefficient: at least 1")
    if "maximum_attempts" in obj:
        value = obj["maximum_attempts"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DefinitionError(f"{here}.retry.maximum_attempts: an integer >= 0 (0: unlimited), not {value!r}")
        values["maximum_attempts"] = value
    if "non_retryable_errors" in obj:
        value = obj["non_retryable_errors"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DefinitionError(f"{here}.retry.non_retryable_errors: a list of error codes")
        values["non_retryable_errors"] = tuple(value)
    return RetryPolicy(**values)
