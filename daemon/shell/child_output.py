"""Where children's output goes: to foundationd's stdout with the child's name in front (``web | line``; a line the
child wrote to stderr ``web ! line``), into the child's ring for ``foundationctl logs``, and into its log file
when it has one (daemon/shell/log_files.py), with a marker line at each start and exit. An agent that could not
start ends its stderr with one line naming the cause (``foundation-agent: ...``, agents.runtime.CAUSE_PREFIX);
``exited`` hands it back so the daemon can log it and show it in ``status``."""

from __future__ import annotations

import logging
import time

from daemon.core.logfiles import LogSettings
from daemon.core.spec import WorkerSpec
from daemon.shell.log_files import LogFiles
from daemon.shell.logs import DAEMON, STDERR, LogRings, RingHandler
from daemon.shell.output import OutputSink

log = logging.getLogger("foundationd")

AGENT_CAUSE = "foundation-agent: "  # agents.runtime.CAUSE_PREFIX (daemon/ does not import agents/)
SEPARATORS = {STDERR: b" ! "}  # stdout's (and the rest's): " | "


class ChildOutput:
    def __init__(self, stdout: OutputSink | None, settings: LogSettings) -> None:
        self._stdout = stdout
        self.rings = self._logs = LogRings()
        self.daemon_log = RingHandler(self.rings)  # the daemon's own log into the ring "(foundationd)"
        self.files = LogFiles(settings)
        self.start_causes: dict[str, str] = {}  # an agent's one-line cause of its last failed start (for attach)

    def lines(self, name: str, stream: str, lines: list[bytes]) -> None:
        """A child's complete lines from one of its pipes (the shell has split them)."""
        now = time.time()
        if self._stdout is not None:
            prefix = name.encode() + SEPARATORS.get(stream, b" | ")
            self._stdout.write(b"".join(prefix + line + b"\n" for line in lines))
        self._logs.add(name, [line.decode(errors="replace") for line in lines], stream, now)
        self.files.write(name, stream, lines, now)

    def started(self, spec: WorkerSpec, pid: int) -> None:
        self.files.started(spec)
        self._mark(spec.name, f"-- started (pid {pid})")

    def exited(self, name: str, description: str, *, starting: bool) -> str | None:
        """Mark the exit. A child that was ``starting``: the agent's one-line cause of its failed start, if its last
        stderr line gave one (logged, and kept in ``start_causes``)."""
        cause = self._logs.last_starting(name, AGENT_CAUSE) if starting else None
        self._mark(name, f"-- exited: {description}")
        if cause is not None:
            log.error("%s failed to start: %s", name, cause)
            self.start_causes[name] = cause
        return cause

    def configure(self, settings: LogSettings) -> None:
        self.files.configure(settings)

    def forget(self, name: str) -> None:
        self._logs.forget(name)
        self.files.forget(name)

    def close(self) -> None:
        self.files.close()

    def _mark(self, name: str, text: str) -> None:
        now = time.time()
        self._logs.add(name, [text], DAEMON, now)
        self.files.write(name, DAEMON, [text.encode()], now)
