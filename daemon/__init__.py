"""Foundation's daemon: the supervision core, the process shell, the control socket and the entry points."""

# The single source of the version: pyproject.toml reads it from here (dynamic), so the daemon never pays for an
# importlib.metadata lookup at start.
__version__ = "0.1.0"


def version() -> str:
    return __version__
