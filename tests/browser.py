"""A real headless browser for tests: Debian's chromium, driven over the DevTools protocol on a pipe.

    test ──JSON + NUL──> fd 3 of chromium (--remote-debugging-pipe)
         <──JSON + NUL── fd 4
    Target.createTarget(url) -> attachToTarget(flatten) -> Runtime.evaluate(expression) in that page

No extra package and no downloaded browser: ``apt-get install chromium`` (``.ci/run`` does it); a test that needs it
is skipped, saying why, when /usr/bin/chromium is absent. Every read has a deadline; the browser runs in its own
process group, which ``close`` kills whole (renderers, zygotes, GPU process) and reaps.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import orjson

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-breakpad", "--disable-crash-reporter", "--remote-debugging-pipe")


# The pipe ends where chromium looks for them, then exec it (no preexec_fn in a threaded test process).
ON_3_AND_4 = """
import fcntl, os, sys
ends = [int(fd) for fd in sys.argv[1:3]]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in ends]
for fd in ends:
    os.close(fd)
os.dup2(high[0], 3)
os.dup2(high[1], 4)
for fd in high:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


class BrowserError(Exception):
    pass


class Browser:
    def __init__(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="foundation-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        command = [CHROMIUM, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"]
        self.proc = subprocess.Popen([sys.executable, "-c", ON_3_AND_4, str(to_browser_r), str(from_browser_w),
                                      *command], pass_fds=(to_browser_r, from_browser_w), process_group=0,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 15.0) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, orjson.dumps(message) + b"\0")
        deadline = time.monotonic() + timeout
        for reply in self._messages(deadline):
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
        raise BrowserError(f"{method}: no answer in {timeout}s")

    def _messages(self, deadline: float) -> Iterator[dict[str, Any]]:
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                yield orjson.loads(raw)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                return
            data = os.read(self._from_browser, 1 << 16)
            if not data:
                raise BrowserError(f"chromium closed its pipe (exit status {self.proc.poll()})")
            self._buffer += data

    def open(self, url: str) -> Page:
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session)

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of it is left: renderers, zygotes
        self.proc.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self._browser, self._session = browser, session

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able), or BrowserError on an exception."""
        result = self._browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                    session=self._session)
        if "exceptionDetails" in result:
            raise BrowserError(str(result["exceptionDetails"].get("exception", result["exceptionDetails"])))
        return result["result"].get("value")
