"""Where the daemon keeps its sockets (runtime dir) and its data (state dir), by DESIGN 3.1's precedence."""

from __future__ import annotations

import os
from pathlib import Path


def runtime_dir(flag: str | None = None, config_value: str | None = None) -> Path:
    """Flag, else FOUNDATION_RUNTIME_DIR, else systemd's RUNTIME_DIRECTORY, else the config, else XDG."""
    return Path(
        flag
        or os.environ.get("FOUNDATION_RUNTIME_DIR")
        or _first(os.environ.get("RUNTIME_DIRECTORY"))
        or config_value
        or _xdg_runtime()
    )


SYSTEMD_RUNTIME_DIR = Path("/run/foundation")  # RuntimeDirectory=foundation in systemd/foundation.service


def client_runtime_dirs(flag: str | None = None, config_value: str | None = None) -> list[Path]:
    """Where ``foundationctl`` looks for the daemon, in order. An explicit choice (flag, FOUNDATION_RUNTIME_DIR,
    RUNTIME_DIRECTORY) is the only candidate; otherwise the config's ``runtime_dir`` (with ``--config``), the
    per-user default, and the systemd unit's directory: an operator's shell has neither the unit's environment
    nor, under sudo, the same XDG_RUNTIME_DIR as the daemon."""
    explicit = flag or os.environ.get("FOUNDATION_RUNTIME_DIR") or _first(os.environ.get("RUNTIME_DIRECTORY"))
    if explicit:
        return [Path(explicit)]
    found = [Path(config_value)] if config_value else []
    return list(dict.fromkeys([*found, _xdg_runtime(), SYSTEMD_RUNTIME_DIR]))


def state_dir(flag: str | None = None, config_value: str | None = None) -> Path:
    return Path(
        flag
        or os.environ.get("FOUNDATION_STATE_DIR")
        or _first(os.environ.get("STATE_DIRECTORY"))
        or config_value
        or Path.home() / ".local" / "state" / "foundation"
    )


def _first(value: str | None) -> str | None:
    # systemd passes a colon-separated list when a unit names several directories.
    return value.split(":")[0] if value else None


def _xdg_runtime() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "foundation"
    return Path(f"/tmp/foundation-{os.getuid()}")
