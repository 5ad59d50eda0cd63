"""Load the daemon's TOML config (DESIGN 3.2) into frozen specs, refusing anything it does not understand.

Validation is strict on purpose: in a supervisor config a typo silently becomes a missing setting or a
default restart policy, and that is only noticed when something crashes in production. Every error names the
dotted key (`supervisor.children[1].strategy`) so that `foundationd` can exit 2 with one line pointing at the
mistake.
"""

from __future__ import annotations

import grp
import json
import math
import pwd
import re
import socket
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from daemon.core.logfiles import MAX_KEEP, MIN_MAX_SIZE, LogSettings
from daemon.core.resilience.settings import ResilienceConfig, SettingError
from daemon.core.resilience.settings import parse as parse_resilience
from daemon.core.spec import (
    BRUTAL_KILL,
    INFINITY,
    Backoff,
    ChildSpec,
    RestartType,
    Shutdown,
    Strategy,
    SupervisorSpec,
    WorkerSpec,
)
from daemon.services.migrations_core import (
    MigrationSpec,
    SpecError,
    check_state_agents,
    parse_flags,
    parse_migration,
)

ROOT_NAME = "root"
EMBEDDED = "<embedded>"
REQUEST = "<request>"
PYTHON_TOKEN = "@python@"  # in the embedded default, replaced by the daemon's own interpreter

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
AGENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_TOP_KEYS = ("daemon", "dashboard", "flags", "metrics", "migration", "resilience", "supervisor", "workflows",
             "cluster")
_CLUSTER_KEYS = ("servers", "node", "creds", "replicas")
_WORKFLOWS_KEYS = ("task_agents", "monitor", "pool", "hosts")
MAX_TASK_AGENTS = 64
_DAEMON_KEYS = ("control_group", "fork_server", "log_dir", "log_keep", "log_max_size", "runtime_dir", "state_dir")
_LOG_KEYS = {"log_dir": "directory", "log_max_size": "max_size", "log_keep": "keep"}  # [daemon] -> LogSettings
# Any of these keys makes a child table a supervisor rather than a worker.
_SUPERVISOR_MARKERS = ("children", "strategy", "intensity", "period")
_SUPERVISOR_KEYS = ("name", "restart", *_SUPERVISOR_MARKERS)
_WORKER_KEYS = (
    "agent", "backoff", "command", "env", "group", "limits", "liveness", "log_file", "log_keep", "log_max_size",
    "mailbox", "max_memory", "name", "on_intensity", "ready",
    "restart", "shutdown", "start_timeout", "umask", "user", "watchdog", "working_dir",
)
# Resource limits a worker may set (applied with util-linux prlimit, whose option names these are). Sizes are
# bytes and may be written "512M"; cpu is seconds; nofile and nproc are counts. -1 in a spec means infinity.
SIZE_LIMITS = ("as", "core", "fsize", "memlock", "stack")
COUNT_LIMITS = ("cpu", "nofile", "nproc")
LIMIT_NAMES = tuple(sorted(SIZE_LIMITS + COUNT_LIMITS))
RLIM_INFINITY = -1
_SIZE_RE = re.compile(r"([0-9]+)([KMGT]?)")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MAX_RLIMIT = (1 << 63) - 1
_UMASK_RE = re.compile(r"[0-7]{1,4}")
_BACKOFF_KEYS = tuple(f.name for f in fields(Backoff))
_ROOT_FORBIDDEN = {
    "name": f"the root supervisor is always named {ROOT_NAME}",
    "restart": "the root supervisor has no parent to restart it: its failure ends the daemon",
}
_KINDS = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}

_Check = Callable[[Any, str, str], Any]  # (value, dotted key, source) -> validated value, or ConfigError


class ConfigError(Exception):
    """An invalid config, told as one line: where it came from, which key, and what is wrong."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(source, key, message)
        self.source = source
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}: " if self.key else f"{self.source}: "
        # One line always: callers print it as the daemon's last word before exit 2.
        return " ".join((where + self.message).splitlines())


@dataclass(frozen=True)
class DaemonConfig:
    """Everything a config file says: the tree to supervise and the daemon's own settings."""

    root: SupervisorSpec
    runtime_dir: str | None = None
    state_dir: str | None = None
    control_group: str | None = None
    fork_server: bool = True  # SDK agents forked from a preloaded zygote (agents/zygote.py) instead of exec'd
    logs: LogSettings = field(default_factory=LogSettings)  # children's output files: log_dir, log_max_size, log_keep
    metrics_listen: str | None = None  # [metrics] listen: "HOST:PORT" serving /metrics (DESIGN 3.9); None: off
    dashboard_listen: str | None = None  # [dashboard] listen: "HOST:PORT" serving the live page; None: off
    flags: tuple[tuple[str, Any], ...] = ()  # [flags] name = on | off | PERCENT (DESIGN 3.8)
    migration: MigrationSpec | None = None  # [migration] and its [[migration.stages]]
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)  # [resilience]: breakers, limits, ...
    source: str = EMBEDDED


def load_config(path: str | None) -> DaemonConfig:
    """Read and validate a config file; None means the embedded demo tree (DESIGN 3.1, no --config)."""
    if path is None:
        return _embedded()
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the config file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    config = parse_config(text, source)
    base = Path(path).resolve().parent
    directory = config.logs.directory
    logs = replace(config.logs, base=str(base), directory=None if directory is None else str(base / directory))
    return replace(config, root=_relative_to(config.root, base), logs=logs)


def parse_config(text: str, source: str) -> DaemonConfig:
    """Validate TOML text; `source` only labels errors and the result (a path, or a name like <embedded>)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from exc
    _Table(data, "", source).reject_unknown(_TOP_KEYS)
    settings = _daemon_settings(data.get("daemon"), source)
    logs = LogSettings(**{attr: settings.pop(name) for name, attr in _LOG_KEYS.items() if name in settings})
    settings.update(_listen_settings(data.get("metrics"), "metrics", "/metrics", 9464, source))
    settings.update(_listen_settings(data.get("dashboard"), "dashboard", "the dashboard", 9465, source))
    settings.update(_flag_settings(data, source))
    if "resilience" in data:
        try:
            settings["resilience"] = parse_resilience(data["resilience"])
        except SettingError as exc:
            raise ConfigError(source, exc.key, exc.message) from None
    root = _root(data.get("supervisor"), source)
    _check_log_keys(data.get("supervisor"), "supervisor", source, logs.directory is not None)
    if "workflows" in data:
        root = _with_workflows(root, data["workflows"], source)
    if "cluster" in data:
        root = _with_cluster(root, data["cluster"], source)
    if settings.get("migration") is not None:  # a state migration names agents of the tree
        try:
            check_state_agents(settings["migration"], root)
        except SpecError as exc:
            raise ConfigError(source, exc.key, exc.message) from None
    return DaemonConfig(root=root, source=source, logs=logs, **settings)


def child_spec_from_dict(data: object, key: str = "spec", source: str = REQUEST) -> ChildSpec:
    """Validate one child (worker or nested supervisor), as the file parser does, for the `attach` verb.

    Names are checked for duplicates within `data` only: clashes with the running tree are the caller's.
    """
    return _child(data, key, source, {})


# --- tables -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A table under validation; it knows its dotted key so that every error can point at the exact spot."""

    data: dict[str, Any]
    key: str
    source: str

    @classmethod
    def of(cls, value: object, key: str, source: str, known: tuple[str, ...], expected: str) -> _Table:
        table = cls(_expect(value, (dict,), expected, key, source), key, source)
        table.reject_unknown(known)
        return table

    def at(self, name: str) -> str:
        return _join(self.key, name)

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.at(name), message)

    def reject_unknown(self, known: tuple[str, ...]) -> None:
        """Typos must fail loudly: an unknown key is never ignored."""
        for name in self.data:
            if name not in known:
                raise self.error(name, f"unknown key (known: {', '.join(sorted(known))})")

    def take(self, out: dict[str, Any], name: str, check: _Check) -> None:
        """Validate `name` into `out` if present, so absent keys keep the spec dataclass's own default."""
        if name in self.data:
            out[name] = check(self.data[name], self.at(name), self.source)


def _join(key: str, name: str) -> str:
    # Odd keys are quoted as TOML would quote them, which also keeps the error on one line.
    part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
    return f"{key}.{part}" if key else part


def _daemon_settings(value: object, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    table = _Table.of(value, "daemon", source, _DAEMON_KEYS, "a table")
    out: dict[str, Any] = {}
    checks: dict[str, _Check] = {"fork_server": _boolean, "log_max_size": _log_max_size, "log_keep": _log_keep}
    for name in _DAEMON_KEYS:
        table.take(out, name, checks.get(name, _string))
    return out


def _check_log_keys(value: object, key: str, source: str, has_log_dir: bool) -> None:
    """A child's log_max_size or log_keep with no file to rotate (no log_file, and no [daemon] log_dir) would do
    nothing: say so, rather than let someone believe their logs rotate. (The tables are valid by now.)"""
    if not isinstance(value, dict):
        return
    for i, child in enumerate(value.get("children", [])):
        at = f"{key}.children[{i}]"
        if not isinstance(child, dict):
            continue
        _check_log_keys(child, at, source, has_log_dir)
        has_file = isinstance(child.get("log_file"), str) or ("log_file" not in child and has_log_dir)
        for name in ("log_max_size", "log_keep"):
            if name in child and not has_file:
                why = "log_file = false" if child.get("log_file") is False else "no log_file, and no [daemon] log_dir"
                raise ConfigError(source, f"{at}.{name}", f"this child has no log file to rotate ({why})")


def _listen_settings(value: object, name: str, what: str, port: int, source: str) -> dict[str, Any]:
    """``[metrics] listen = "127.0.0.1:9464"``, ``[dashboard] listen = "127.0.0.1:9465"``: an IP address (not a name,
    which would need a lookup) and a port (0: any free one, shown in ``status --json``)."""
    if value is None:
        return {}
    table = _Table.of(value, name, source, ("listen",), "a table")
    if "listen" not in table.data:
        raise table.error("listen", f"missing: the address to serve {what} on, e.g. \"127.0.0.1:{port}\"")
    listen = _string(table.data["listen"], table.at("listen"), source)
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise table.error("listen", str(exc)) from None
    return {f"{name}_listen": listen}


def _flag_settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``[flags]`` and ``[migration]`` (daemon/services/migrations_core.py validates them)."""
    out: dict[str, Any] = {}
    try:
        if "flags" in data:
            out["flags"] = parse_flags(data["flags"])
        if "migration" in data:
            out["migration"] = parse_migration(data["migration"])
    except SpecError as exc:
        raise ConfigError(source, exc.key, exc.message) from None
    return out


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` -> (host, port); ValueError naming what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("expected HOST:PORT, e.g. \"127.0.0.1:9464\"")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP address (a name is not resolved: write the address)") from None
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return host, port


def _boolean(value: object, key: str, source: str) -> bool:
    return _expect(value, (bool,), "true or false", key, source)


# --- the tree -----------------------------------------------------------------------------------------------


def _root(value: object, source: str) -> SupervisorSpec:
    if value is None:
        return SupervisorSpec(name=ROOT_NAME)
    table = _Table(_expect(value, (dict,), "a table", "supervisor", source), "supervisor", source)
    for name, why in _ROOT_FORBIDDEN.items():
        if name in table.data:
            raise table.error(name, why)
    table.reject_unknown(_SUPERVISOR_MARKERS)
    return _supervisor(table, ROOT_NAME, {})


def _child(value: object, key: str, source: str, seen: dict[str, str]) -> ChildSpec:
    table = _Table(_expect(value, (dict,), "a table", key, source), key, source)
    is_supervisor = _is_supervisor(table)
    table.reject_unknown(_SUPERVISOR_KEYS if is_supervisor else _WORKER_KEYS)
    name = _claim_name(table, seen)
    return _supervisor(table, name, seen) if is_supervisor else _worker(table, name)


def _is_supervisor(table: _Table) -> bool:
    """A child with any supervisor key is a supervisor; a worker key beside one deserves a precise error."""
    markers = [name for name in _SUPERVISOR_MARKERS if name in table.data]
    if not markers:
        return False
    for name in table.data:
        if name in _WORKER_KEYS and name not in _SUPERVISOR_KEYS:
            raise table.error(name, f"a worker key, but {markers[0]} makes this child a supervisor")
    return True


def _claim_name(table: _Table, seen: dict[str, str]) -> str:
    """Names are global in the tree because the CLI addresses children by name alone."""
    if "name" not in table.data:
        raise table.error("name", "missing: every child needs a name")
    key = table.at("name")
    name = _name(table.data["name"], key, table.source)
    if name == ROOT_NAME:
        raise table.error("name", f'"{ROOT_NAME}" is reserved for the root supervisor')
    if name in seen:
        raise table.error("name", f'duplicate name "{name}" (first used at {seen[name]}); names are global')
    seen[name] = key
    return name


def _supervisor(table: _Table, name: str, seen: dict[str, str]) -> SupervisorSpec:
    out: dict[str, Any] = {}
    table.take(out, "strategy", _choice(Strategy, "strategy"))
    table.take(out, "intensity", _intensity)
    table.take(out, "period", _positive)
    table.take(out, "restart", _choice(RestartType, "restart type"))
    key = table.at("children")
    items = _expect(table.data.get("children", []), (list,), "an array of tables", key, table.source)
    out["children"] = tuple(_child(item, f"{key}[{i}]", table.source, seen) for i, item in enumerate(items))
    return SupervisorSpec(name=name, **out)


def _worker(table: _Table, name: str) -> WorkerSpec:
    has_command, has_agent = "command" in table.data, "agent" in table.data
    if has_command and has_agent:
        raise ConfigError(table.source, table.key, "a worker has either a command or an agent, not both")
    if not has_command and not has_agent:
        raise ConfigError(table.source, table.key, "a worker needs a command or an agent")
    out: dict[str, Any] = {}
    table.take(out, "command", _command)
    table.take(out, "agent", _agent)
    table.take(out, "restart", _choice(RestartType, "restart type"))
    table.take(out, "shutdown", _shutdown)
    table.take(out, "env", _env)
    table.take(out, "working_dir", _string)
    table.take(out, "backoff", _backoff)
    table.take(out, "mailbox", _mailbox)
    table.take(out, "liveness", _positive)
    table.take(out, "ready", _ready)
    table.take(out, "on_intensity", _on_intensity)
    table.take(out, "start_timeout", _positive)
    table.take(out, "watchdog", _positive)
    if out.get("watchdog") is not None and out.get("ready") != "notify":
        raise ConfigError(table.source, table.at("watchdog"), 'a watchdog needs ready = "notify" (pings come there)')
    table.take(out, "user", _user)
    table.take(out, "group", _group)
    table.take(out, "umask", _umask)
    table.take(out, "limits", _limits)
    table.take(out, "max_memory", _max_memory)
    table.take(out, "log_file", _log_file)
    table.take(out, "log_max_size", _log_max_size)
    table.take(out, "log_keep", _log_keep)
    return WorkerSpec(name=name, **out)


# --- values -------------------------------------------------------------------------------------------------


def _expect(value: Any, kinds: tuple[type, ...], expected: str, key: str, source: str) -> Any:
    """Type check that does not let a TOML boolean pass for a number (bool is an int in Python)."""
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(source, key, f"expected {expected}, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    kind = _KINDS.get(type(value), type(value).__name__)
    if isinstance(value, bool | int | float | str):
        shown = json.dumps(value)
        return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return kind


def _string(value: object, key: str, source: str) -> str:
    text = _expect(value, (str,), "a string", key, source)
    if not text:
        raise ConfigError(source, key, "must not be empty")
    if "\0" in text:
        raise ConfigError(source, key, "must not contain a NUL character")
    return text


def _name(value: object, key: str, source: str) -> str:
    text = _expect(value, (str,), "a string", key, source)
    if not NAME_RE.fullmatch(text):
        rule = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        raise ConfigError(source, key, f"invalid name {json.dumps(text)}: use {rule}")
    return text


def _agent(value: object, key: str, source: str) -> str:
    text = _expect(value, (str,), 'a string "module.path:ClassName"', key, source)
    if not AGENT_RE.fullmatch(text):
        raise ConfigError(source, key, f'expected "module.path:ClassName", got {json.dumps(text)}')
    return text


def _command(value: object, key: str, source: str) -> tuple[str, ...]:
    items = _expect(value, (list,), "an array of strings", key, source)
    if not items:
        raise ConfigError(source, key, "must not be empty: give the program and its arguments")
    return tuple(_string(item, f"{key}[{i}]", source) for i, item in enumerate(items))


def _env(value: object, key: str, source: str) -> tuple[tuple[str, str], ...]:
    table = _expect(value, (dict,), "a table of strings", key, source)
    for name, item in table.items():
        if not name or "=" in name or "\0" in name:
            raise ConfigError(source, _join(key, name), "not a valid environment variable name")
        if "\0" in _expect(item, (str,), "a string", _join(key, name), source):
            raise ConfigError(source, _join(key, name), "must not contain a NUL character")
    return tuple(sorted(table.items()))


def _number(value: object, key: str, source: str) -> float:
    number = _expect(value, (int, float), "a number", key, source)
    if not math.isfinite(number):
        raise ConfigError(source, key, f"expected a finite number, got {_describe(number)}")
    return float(number)


def _positive(value: object, key: str, source: str) -> float:
    number = _number(value, key, source)
    if number <= 0:
        raise ConfigError(source, key, f"must be > 0, got {number:g}")
    return number


def _intensity(value: object, key: str, source: str) -> int:
    number = _expect(value, (int,), "an integer", key, source)
    if number < 0:
        raise ConfigError(source, key, f"must be >= 0, got {number}")
    return number


def _on_intensity(value: object, key: str, source: str) -> str:
    text = _expect(value, (str,), "a string", key, source)
    if text not in ("escalate", "park"):
        raise ConfigError(source, key, f'expected "escalate" (OTP: the supervisor fails) or "park", got '
                          f"{_describe(text)}")
    return text


def _ready(value: object, key: str, source: str) -> str:
    text = _expect(value, (str,), "a string", key, source)
    if text not in ("exec", "notify"):
        raise ConfigError(source, key, f'expected "exec" or "notify", got {_describe(text)}')
    return text


def _mailbox(value: object, key: str, source: str) -> int:
    number = _expect(value, (int,), "an integer", key, source)
    if number < 1:
        raise ConfigError(source, key, f"must be >= 1, got {number}")
    return number


def _user(value: object, key: str, source: str) -> str:
    """A user name, or a uid as a string of digits; either must exist here (the lookup is redone at spawn)."""
    text = _string(value, key, source)
    try:
        pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except (KeyError, OverflowError):
        raise ConfigError(source, key, f"no such user {json.dumps(text)} on this system") from None
    return text


def _group(value: object, key: str, source: str) -> str:
    """A group name, or a gid as a string of digits; either must exist here."""
    text = _string(value, key, source)
    try:
        grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
    except (KeyError, OverflowError):
        raise ConfigError(source, key, f"no such group {json.dumps(text)} on this system") from None
    return text


def _umask(value: object, key: str, source: str) -> int:
    """Only a string of octal digits ("0027"): a TOML integer 27 would silently mean decimal 27 = 0o033."""
    text = _expect(value, (str,), 'a string of octal digits like "0027"', key, source)
    if not _UMASK_RE.fullmatch(text) or int(text, 8) > 0o777:
        raise ConfigError(source, key, f'expected octal digits from "0000" to "0777", got {_describe(text)}')
    return int(text, 8)


def _size(value: object, key: str, source: str, what: str) -> int:
    """Bytes: an integer, or digits with a binary unit K, M, G or T ("512M" is 512 MiB)."""
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match is None:
            raise ConfigError(source, key, f'expected {what}, got {_describe(value)}')
        number = int(match[1]) * _SIZE_UNITS[match[2]]
    else:
        number = _expect(value, (int,), what, key, source)
    if number < 0 or number > _MAX_RLIMIT:
        raise ConfigError(source, key, f"must be between 0 and {_MAX_RLIMIT}, got {number}")
    return number


def _limit_value(name: str, value: object, key: str, source: str) -> int:
    if value == INFINITY:
        return RLIM_INFINITY
    if name in SIZE_LIMITS:
        return _size(value, key, source, f'bytes (an integer, or a size like "512M"), or "{INFINITY}"')
    unit = "seconds" if name == "cpu" else "a count"
    return _size(_expect(value, (int,), f'an integer ({unit}) or "{INFINITY}"', key, source), key, source, unit)


def _limits(value: object, key: str, source: str) -> tuple[tuple[str, int, int], ...]:
    """`limits = { nofile = 1024, as = "1G", core = [0, "infinity"] }`: one value sets soft = hard, a pair
    sets [soft, hard]. The result is sorted (name, soft, hard) with RLIM_INFINITY (-1) for "infinity"."""
    table = _Table.of(value, key, source, LIMIT_NAMES, "a table of resource limits")
    limits = []
    for name, item in sorted(table.data.items()):
        at = table.at(name)
        if isinstance(item, list):
            if len(item) != 2:
                raise ConfigError(source, at, f"expected a value or a [soft, hard] pair, got {len(item)} items")
            soft = _limit_value(name, item[0], f"{at}[0]", source)
            hard = _limit_value(name, item[1], f"{at}[1]", source)
            if hard != RLIM_INFINITY and (soft == RLIM_INFINITY or soft > hard):
                raise ConfigError(source, at, f"the soft limit must not exceed the hard limit, got {json.dumps(item)}")
        else:
            soft = hard = _limit_value(name, item, at, source)
        limits.append((name, soft, hard))
    return tuple(limits)


def _max_memory(value: object, key: str, source: str) -> int:
    number = _size(value, key, source, 'bytes (an integer, or a size like "512M")')
    if number == 0:
        raise ConfigError(source, key, "must be > 0 (leave it out for no bound)")
    return number


def _log_file(value: object, key: str, source: str) -> str | bool:
    """A path (relative: under [daemon] log_dir, else the config file's directory), or false for none."""
    if value is False:
        return False
    if value is True:
        raise ConfigError(source, key, "expected a path, or false for no file (true: leave the key out, and set "
                          "[daemon] log_dir)")
    _expect(value, (str,), "a path (a string) or false", key, source)
    return _string(value, key, source)


def _log_max_size(value: object, key: str, source: str) -> int:
    number = _size(value, key, source, 'bytes (an integer, or a size like "10M")')
    if number < MIN_MAX_SIZE:
        raise ConfigError(source, key, f"must be at least {MIN_MAX_SIZE} bytes (1K), got {number}")
    return number


def _log_keep(value: object, key: str, source: str) -> int:
    number = _expect(value, (int,), "an integer (how many rotated files to keep)", key, source)
    if not 0 <= number <= MAX_KEEP:
        raise ConfigError(source, key, f"must be between 0 and {MAX_KEEP}, got {number}")
    return number


def _shutdown(value: object, key: str, source: str) -> Shutdown:
    if isinstance(value, str) and value in (BRUTAL_KILL, INFINITY):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    expected = f'a positive number of seconds, "{BRUTAL_KILL}" or "{INFINITY}"'
    raise ConfigError(source, key, f"expected {expected}, got {_describe(value)}")


def _choice(enum: type[StrEnum], label: str) -> _Check:
    def check(value: object, key: str, source: str) -> StrEnum:
        text = _expect(value, (str,), "a string", key, source)
        try:
            return enum(text)
        except ValueError:
            options = ", ".join(member.value for member in enum)
            message = f"unknown {label} {json.dumps(text)} (expected {options})"
            raise ConfigError(source, key, message) from None

    return check


def _backoff(value: object, key: str, source: str) -> Backoff | None:
    """`backoff = true` takes the defaults, `false` turns it off, a table sets some or all of the fields."""
    if isinstance(value, bool):
        return Backoff() if value else None
    table = _Table.of(value, key, source, _BACKOFF_KEYS, "a table or a boolean")
    backoff = Backoff(**{name: _number(table.data[name], table.at(name), source) for name in table.data})
    rules = (
        ("initial", backoff.initial > 0, "> 0"),
        ("factor", backoff.factor >= 1, ">= 1"),
        ("max", backoff.max >= backoff.initial, f">= initial ({backoff.initial:g})"),
        ("jitter", 0 <= backoff.jitter <= 1, "between 0 and 1"),
        ("reset_after", backoff.reset_after > 0, "> 0"),
    )
    for name, ok, rule in rules:
        if not ok:
            raise table.error(name, f"must be {rule}, got {getattr(backoff, name):g}")
    return backoff


# --- the embedded default -----------------------------------------------------------------------------------


def _with_workflows(root: SupervisorSpec, value: object, source: str) -> SupervisorSpec:
    """``[workflows]`` (DESIGN 3.6): the supervisor ``workflows`` (for the workflows' own processes, attached at run
    time), the ``coordinator``, the supervisor ``tasks`` with ``task-1`` ... ``task-N`` (and the command steps, attached
    at run time) and the ``monitor``, after the tree's own children."""
    table = _Table.of(value, "workflows", source, _WORKFLOWS_KEYS, "a table")
    count = table.data.get("task_agents", 2)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TASK_AGENTS:
        raise table.error("task_agents", f"an integer from 1 to {MAX_TASK_AGENTS}, not {_describe(count)}")
    monitor = _boolean(table.data.get("monitor", True), table.at("monitor"), source)
    warm = table.data.get("pool", 2)
    if isinstance(warm, bool) or not isinstance(warm, int) or not 0 <= warm <= MAX_TASK_AGENTS:
        raise table.error("pool", f"an integer from 0 to {MAX_TASK_AGENTS}, not {_describe(warm)}")
    hosts = table.data.get("hosts", 1)
    if isinstance(hosts, bool) or not isinstance(hosts, int) or not 0 <= hosts <= MAX_TASK_AGENTS:
        raise table.error("hosts", f"an integer from 0 to {MAX_TASK_AGENTS}, not {_describe(hosts)}")
    warm = 0 if hosts else warm  # runs without --id go to a host: a warm pool of processes would wait for nothing
    pool = (("FOUNDATION_TASK_AGENTS", str(count)),)
    added: list[ChildSpec] = [
        # A workflow process that keeps crashing is parked (attached so), never allowed to fail this supervisor.
        # Its static children are the workflow hosts (agents/workflow/host.py), which run the runs given no --id.
        SupervisorSpec(name="workflows", intensity=100, period=10.0, children=tuple(
            WorkerSpec(name=f"wfhost-{i}", agent="agents.workflow.host:WorkflowHost", env=pool)
            for i in range(1, hosts + 1))),
        WorkerSpec(name="coordinator", agent="agents.builtin.coordinator:Coordinator",
                   env=(*pool, ("FOUNDATION_WORKFLOW_POOL", str(warm)))),
        SupervisorSpec(name="tasks", intensity=10 * count, period=10.0, children=tuple(
            WorkerSpec(name=f"task-{i}", agent="agents.builtin.task:TaskAgent") for i in range(1, count + 1))),
    ]
    if monitor:
        added.append(WorkerSpec(name="monitor", agent="agents.builtin.monitor:Monitor"))
    taken = {spec.name for spec in _walk(root)}
    for spec in added:
        for name in [spec.name, *(c.name for c in getattr(spec, "children", ()))]:
            if name in taken:
                raise table.error("task_agents", f"[workflows] adds a child named {name!r}, and the tree has "
                                  "one already: rename yours")
    return replace(root, children=(*root.children, *added))


def _with_cluster(root: SupervisorSpec, value: object, source: str) -> SupervisorSpec:
    """``[cluster]`` (DESIGN 3.10): the child ``bridge``, an SDK agent that carries casts to ``NAME@node`` through
    NATS JetStream and delivers the other nodes' casts here. ``servers`` (NATS URLs), ``node`` (this host's name, a
    child name's characters), ``creds`` (a NATS credentials file, optional), ``replicas`` (the stream's, 1 to 5,
    default 3)."""
    table = _Table.of(value, "cluster", source, _CLUSTER_KEYS, "a table")
    servers = table.data.get("servers")
    if not (isinstance(servers, list) and servers and all(isinstance(s, str) and "://" in s for s in servers)):
        raise table.error("servers", f"a non-empty list of NATS URLs (nats://host:4222), not {_describe(servers)}")
    node = _string(table.data.get("node", ""), table.at("node"), source)
    if not NAME_RE.fullmatch(node) or "." in node:
        raise table.error("node", f"letters, digits, '_' and '-' (a NATS subject token), not {node!r}")
    replicas = table.data.get("replicas", 3)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
        raise table.error("replicas", f"an integer from 1 to 5, not {_describe(replicas)}")
    env = [("FOUNDATION_CLUSTER_SERVERS", ",".join(servers)), ("FOUNDATION_CLUSTER_NODE", node),
           ("FOUNDATION_CLUSTER_REPLICAS", str(replicas))]
    if "creds" in table.data:
        env.append(("FOUNDATION_CLUSTER_CREDS", _string(table.data["creds"], table.at("creds"), source)))
    if any(spec.name == "bridge" for spec in _walk(root)):
        raise table.error("node", "[cluster] adds a child named 'bridge', and the tree has one already: rename yours")
    bridge = WorkerSpec(name="bridge", agent="agents.builtin.bridge:Bridge", env=tuple(env))
    return replace(root, children=(*root.children, bridge))


def _walk(spec: ChildSpec) -> list[ChildSpec]:
    if isinstance(spec, SupervisorSpec):
        return [spec, *(s for child in spec.children for s in _walk(child))]
    return [spec]


def _embedded() -> DaemonConfig:
    """The demo tree shipped in the package; its children run on the daemon's own interpreter."""
    text = resources.files("daemon").joinpath("default.toml").read_text(encoding="utf-8")
    config = parse_config(text, EMBEDDED)
    # No file to be relative to: an attached child's relative log_file is taken from foundationd's directory.
    return replace(config, root=_with_python(config.root), logs=replace(config.logs, base=str(Path.cwd())))


def _with_python(spec: SupervisorSpec) -> SupervisorSpec:
    children = tuple(
        _with_python(child)
        if isinstance(child, SupervisorSpec)
        else replace(child, command=tuple(arg.replace(PYTHON_TOKEN, sys.executable) for arg in child.command))
        for child in spec.children
    )
    return replace(spec, children=children)


def _relative_to(spec: SupervisorSpec, base: Path) -> SupervisorSpec:
    """A relative ``working_dir`` is the config file's directory joined with it, as a relative include in nginx
    or a relative ``WorkingDirectory`` would be read by a person: not foundationd's current directory, which is
    ``/`` under systemd and wherever ``make run`` was typed otherwise."""
    children = tuple(
        _relative_to(child, base)
        if isinstance(child, SupervisorSpec)
        else replace(child, working_dir=str(base / child.working_dir))
        if child.working_dir is not None and not Path(child.working_dir).is_absolute()
        else child
        for child in spec.children
    )
    return replace(spec, children=children)
