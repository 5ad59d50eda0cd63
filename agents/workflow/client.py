"""The control socket, as the built-in agents reach it: a ControlClient opened lazily and reopened after an error.

The agents run as the daemon's user, so the daemon lets them attach children and start tasks; they find the socket
through ``FOUNDATION_RUNTIME_DIR``, which the daemon puts in every child's environment.
"""

from __future__ import annotations

import os
from typing import Any

from ipc.control import SOCKET_NAME, ControlClient
from ipc.errors import ErrorCode, FoundationError


class Daemon:
    def __init__(self, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._client: ControlClient | None = None

    def request(self, verb: str, **args: Any) -> Any:
        if self._client is None:
            runtime = os.environ.get("FOUNDATION_RUNTIME_DIR")
            if not runtime:
                raise FoundationError(ErrorCode.INTERNAL, "FOUNDATION_RUNTIME_DIR is not set (run under foundationd)")
            self._client = ControlClient(os.path.join(runtime, SOCKET_NAME), timeout=self._timeout)
        try:
            return self._client.request(verb, **args)
        except FoundationError:
            raise
        except Exception:
            self.close()  # a confused or broken connection: the next request opens a new one (Lazy Pirate)
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
