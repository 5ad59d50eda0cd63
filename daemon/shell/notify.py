"""sd_notify etiquette for foundationd (sd_notify(3)), through the ``sdnotify`` package.

* Nothing at all happens when ``NOTIFY_SOCKET`` is unset (not run by systemd, or Type=simple).
* ``READY=1`` only once the whole tree has started; ``RELOADING=1`` ... ``READY=1`` around a reload;
  ``STOPPING=1`` when an orderly stop begins; ``STATUS=`` a one-line summary kept current.
* ``WATCHDOG=1`` at half of ``WATCHDOG_USEC``, from a timer on the daemon's own loop, so a wedged loop
  stops the pings and systemd kills and restarts the daemon.
* ``NOTIFY_SOCKET`` and ``WATCHDOG_*`` are not passed on to children (the process shell builds their
  environment from a short allow-list).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import sdnotify


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        if self._notifier is not None and self._notifier.socket is not None:
            # Fire and forget, on the loop: a receiver that stops reading must not block the daemon (a full queue
            # drops the message; sdnotify swallows the error).
            self._notifier.socket.setblocking(False)
        self.watchdog_interval = _watchdog_interval(env)
        self._last_status = ""

    def ready(self) -> None:
        self._send("READY=1")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload units tell this reload from an older one.
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def close(self) -> None:
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, if the watchdog is meant for this process (WATCHDOG_PID unset or ours)."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
