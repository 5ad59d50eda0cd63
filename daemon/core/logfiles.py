"""Which file a child's output goes to, and when and how that file rotates: pure decisions, carried out by
daemon/shell/log_files.py.

    [daemon] log_dir, log_max_size, log_keep ───┐
                                                ├─> target_of() ─> LogTarget(path, max_size, keep) | None
    a worker's log_file, log_max_size, log_keep ┘
    a LogTarget, the file's size, the batch to write ─> must_rotate() ─> rotation(): the renames, in order

Rotation is by size and by renames, as logrotate names them: ``web.log`` is the current file, ``web.log.1`` the
newest of the rotated ones, ``web.log.KEEP`` the oldest (the one before it is dropped by the rename over it).
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.spec import WorkerSpec

DEFAULT_MAX_SIZE = 10 << 20  # 10 MiB
DEFAULT_KEEP = 5
MIN_MAX_SIZE = 1 << 10  # a smaller bound would rotate at nearly every batch, each rotation KEEP renames
MAX_KEEP = 100  # each rotation is up to this many renames, done on the daemon's loop


@dataclass(frozen=True)
class LogSettings:
    """The ``[daemon]`` table's part: where children's files go by default, and the rotation defaults."""

    directory: str | None = None  # log_dir, absolute (the loader resolves it); None: no file unless a child names one
    max_size: int = DEFAULT_MAX_SIZE
    keep: int = DEFAULT_KEEP
    base: str = "/"  # a relative log_file without log_dir is taken from here: the config file's directory


@dataclass(frozen=True)
class LogTarget:
    path: str
    max_size: int
    keep: int


def target_of(spec: WorkerSpec, settings: LogSettings) -> LogTarget | None:
    """The file ``spec``'s output goes to, or None: its ``log_file`` (false: none; relative: under ``log_dir``, else
    the config file's directory), else ``<log_dir>/<name>.log`` when there is a ``log_dir``."""
    if spec.log_file is False:
        return None
    if isinstance(spec.log_file, str):
        given = spec.log_file
        path = given if given.startswith("/") else _join(settings.directory or settings.base, given)
    elif settings.directory is not None:
        path = _join(settings.directory, f"{spec.name}.log")
    else:
        return None
    max_size = settings.max_size if spec.log_max_size is None else spec.log_max_size
    keep = settings.keep if spec.log_keep is None else spec.log_keep
    return LogTarget(_normal(path), max_size, keep)


def must_rotate(size: int, incoming: int, max_size: int) -> bool:
    """Rotate before a write that would take a non-empty file past ``max_size``. A batch larger than ``max_size``
    goes whole into a fresh file (lines are never split across files); the next write rotates it."""
    return size > 0 and size + incoming > max_size


def rotation(path: str, keep: int) -> list[tuple[str, str | None]]:
    """The renames (source, destination) that rotate ``path``, oldest first, each over what was there; a missing
    source is skipped. With ``keep`` 0 nothing is kept: ``path`` is removed (destination None)."""
    if keep <= 0:
        return [(path, None)]
    older = [(f"{path}.{n}", f"{path}.{n + 1}") for n in range(keep - 1, 0, -1)]
    return [*older, (path, f"{path}.1")]


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def _normal(path: str) -> str:
    """``path`` without ``.``, ``..`` and doubled slashes, read as written (``logs/../web.log`` is ``web.log`` even
    before ``logs`` exists, which the kernel would refuse)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)
