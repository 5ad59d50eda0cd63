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
