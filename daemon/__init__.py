"""Foundation's daemon: the supervision core, the process shell, the control socket and the entry points."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("foundation-supervisor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
