"""``Workflows``: start and watch workflows from Python, over the control socket (what ``foundationctl workflow``
does, without a process per request)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from ipc.control import SOCKET_NAME, ControlClient
from ipc.workflow_def import parse


class Workflows:
    def __init__(self, runtime_dir: str | os.PathLike[str] | None = None, timeout: float = 3700.0) -> None:
        """``runtime_dir``: the daemon's; default ``FOUNDATION_RUNTIME_DIR`` (set for every child of foundationd)."""
        directory = runtime_dir or os.environ.get("FOUNDATION_RUNTIME_DIR")
        if not directory:
            raise ValueError("no runtime directory: pass runtime_dir or set FOUNDATION_RUNTIME_DIR")
        self._client = ControlClient(str(Path(directory) / SOCKET_NAME), timeout=timeout)

    def run(self, definition: dict[str, Any], wf_id: str | None = None) -> str:
        """Start it; returns its id once the run is on disk. Raises DefinitionError before sending a bad one."""
        parse(definition)
        args: dict[str, Any] = {"op": "run", "definition": definition}
        if wf_id is not None:
            args["id"] = wf_id
        return str(self._client.request("workflow", **args)["id"])

    def wait(self, wf_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """The summary once it has finished or waits for an operator (``"pending": true`` after ``timeout``)."""
        return dict(self._client.request("workflow", op="wait", id=wf_id, timeout=timeout))

    def status(self, wf_id: str) -> dict[str, Any]:
        return dict(self._client.request("workflow", op="status", id=wf_id))

    def results(self, wf_id: str) -> dict[str, Any]:
        return dict(self._client.request("workflow", op="results", id=wf_id))

    def list(self) -> list[dict[str, Any]]:
        return list(self._client.request("workflow", op="list"))

    def cancel(self, wf_id: str) -> dict[str, Any]:
        return dict(self._client.request("workflow", op="cancel", id=wf_id))

    def pause(self, wf_id: str) -> dict[str, Any]:
        return dict(self._client.request("workflow", op="pause", id=wf_id))

    def resume(self, wf_id: str) -> dict[str, Any]:
        return dict(self._client.request("workflow", op="resume", id=wf_id))

    def resolve(self, wf_id: str, step: str, *, done: Any = None, retry: bool = False) -> dict[str, Any]:
        extra: dict[str, Any] = {"retry": True} if retry else {"done": done}
        return dict(self._client.request("workflow", op="resolve", id=wf_id, step=step, **extra))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Workflows:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
