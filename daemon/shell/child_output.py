"""Where children's output goes: to foundationd's stdout with the child's name in front, and into the child's ring
for ``foundationctl logs``, with a marker line at each start and exit. An agent that could not start ends its
output with one line naming the cause (``foundation-agent: ...``, agents.runtime.CAUSE_PREFIX); ``exited`` hands it
back so the daemon can log it and show it in ``status``."""

from __future__ import annotations

from daemon.shell.logs import LogRings
from daemon.shell.output import OutputSink

AGENT_CAUSE = "foundation-agent: "  # agents.runtime.CAUSE_PREFIX (daemon/ does not import agents/)


class ChildOutput:
    def __init__(self, logs: LogRings, stdout: OutputSink | None) -> None:
        self._logs, self._stdout = logs, stdout

    def lines(self, name: str, lines: list[bytes]) -> None:
        """A child's complete lines (the shell has split them)."""
        if self._stdout is not None:
            prefix = name.encode() + b" | "
            self._stdout.write(b"".join(prefix + line + b"\n" for line in lines))
        self._logs.add(name, [line.decode(errors="replace") for line in lines])

    def started(self, name: str, pid: int) -> None:
        self._logs.add(name, [f"-- started (pid {pid})"])

    def exited(self, name: str, description: str) -> str | None:
        """Mark the exit; the agent's one-line cause of a failed start, if its last line gave one."""
        cause = self._logs.last_starting(name, AGENT_CAUSE)
        self._logs.add(name, [f"-- exited: {description}"])
        return cause
