"""The chaos workload: clients of a real foundationd's control socket that log every operation in a History.

    producer threads ── send (producer + seq, or plain) ──┐
    caller thread    ── call {"last": true} ──────────────┼──> foundationd ──> sinks (tests.chaos.sink:Sink)
    workflow thread  ── workflow run (2 command steps) ───┘                └─> tasks: one line per step run
    final()          ── heal, drain, state NAME of every sink, workflow status, the effects file

Outcomes: a request that could not be sent (no connection) or that the daemon answered with an error is ``fail``;
one whose reply never came (reset, timeout) is ``info`` (unknown), except for errors that leave the outcome open
(a ``workflow run`` answered ``timeout`` or ``agent_down`` by way of the coordinator). A producer resends the same
``(producer, seq)`` after anything but ``ok`` (the broker deduplicates it); a plain sender moves on to a new ``n``
after an unknown outcome (a plain resend would be a second message) and retries the same ``n`` after a ``fail``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path
from typing import Any

from agents.testing import DaemonProcess, wait_for
from ipc.control import ControlClient, ControlUnreachable
from ipc.errors import ErrorCode, FoundationError
from tests.chaos.history import History

OPEN_CODES = {ErrorCode.TIMEOUT, ErrorCode.AGENT_DOWN, ErrorCode.INTERNAL}  # the outcome is not known


class Client:
    """One control connection, made again after a failure; ``attempt`` says ok / fail / info."""

    def __init__(self, daemon: DaemonProcess, timeout: float = 6.0) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self.conn: ControlClient | None = None

    def attempt(self, verb: str, open_codes: frozenset[ErrorCode] | set[ErrorCode] = frozenset(), **args: Any
                ) -> tuple[str, Any]:
        if self.conn is None:
            try:
                self.conn = ControlClient(self.daemon.socket_path, timeout=self.timeout)
            except ControlUnreachable as exc:  # nothing was sent
                return "fail", {"error": "unreachable", "message": str(exc)}
        try:
            return "ok", self.conn.request(verb, **args)
        except FoundationError as exc:
            return ("info" if exc.code in open_codes else "fail"), {"error": str(exc.code)}
        except (ControlUnreachable, OSError, ValueError) as exc:  # sent, reply lost (ValueError: a torn line)
            self.close()
            return "info", {"error": "no reply", "message": str(exc)}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Workload:
    def __init__(self, daemon: DaemonProcess, history: History, rng: random.Random, sinks: list[str], *, tag: str,
                 effects: Path, rate: float = 40.0, workflows: bool = True) -> None:
        self.daemon = daemon
        self.history = history
        self.rng = rng
        self.sinks = sinks
        self.tag = tag
        self.effects = effects
        self.period = 1.0 / rate
        self.with_workflows = workflows
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.workflow_ids: list[str] = []
        self.wf_dir = effects.parent

    # ---- running ----

    def start(self) -> None:
        for sink in self.sinks:
            for k in range(2):
                self._thread(self._producer, f"{self.tag}-{sink}-p{k}", sink, True)
            self._thread(self._producer, f"{self.tag}-{sink}-plain", sink, False)
        self._thread(self._caller, "caller")
        if self.with_workflows:
            self._thread(self._workflows, "workflows")

    def _thread(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=(name, *args), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _pace(self, scale: float = 1.0) -> bool:
        """Wait out one period of this thread's rate; True when the workload is over."""
        return self.stop_event.wait(self.period * scale * self.rng.uniform(0.5, 1.5))

    def _producer(self, ch: str, to: str, producer: bool) -> None:
        client = Client(self.daemon)
        n = 1
        while not self._pace():
            value = {"to": to, "ch": ch, "n": n, "producer": producer}
            self.history.invoke(ch, "send", value)
            extra = {"producer": ch, "seq": n} if producer else {}
            status, result = client.attempt("send", name=to, body={"ch": ch, "n": n}, **extra)
            getattr(self.history, status)(ch, "send", result)
            if status == "ok" or (status == "info" and not producer):
                n += 1
        client.close()

    def _caller(self, process: str) -> None:
        client = Client(self.daemon)
        while not self._pace(4):
            to = self.rng.choice(self.sinks)
            self.history.invoke(process, "call", {"to": to})
            status, result = client.attempt("call", name=to, body={"last": True}, timeout=3.0)
            getattr(self.history, status)(process, "call", result.get("reply") if status == "ok" else result)
        client.close()

    def _workflows(self, process: str) -> None:
        client = Client(self.daemon, timeout=10.0)
        k = 0
        while not self._pace(20):
            k += 1
            wf_id = f"{self.tag}-w{k}"
            steps = ["a", "b"]
            definition = {"sequential": [self._step(wf_id, s) for s in steps]}
            self.workflow_ids.append(wf_id)
            self.history.invoke(process, "wf-run", {"id": wf_id, "steps": steps})
            status, result = client.attempt("workflow", OPEN_CODES, op="run", definition=definition, id=wf_id)
            getattr(self.history, status)(process, "wf-run", result)
        client.close()

    def _step(self, wf_id: str, step: str) -> dict[str, Any]:
        script = f'echo "{wf_id}/{step}" >> "{self.effects}"; echo 1'
        return {"task": {"id": step, "action": "command", "args": {"command": ["sh", "-c", script]},
                         "retry": {"maximum_attempts": 1}, "timeout": 30}}

    # ---- the end of a round: every fault healed ----

    def final(self, timeout: float = 90.0) -> None:
        """Wait until every sink has drained its mailbox, then read every effect."""
        deadline = time.monotonic() + timeout
        client = Client(self.daemon, timeout=10.0)

        def drained() -> bool:
            status = self.daemon.status()
            broker = status["broker"]
            return all(s not in broker["mailboxes"] and s in broker["connected"] for s in self.sinks)

        with contextlib.suppress(AssertionError):  # not drained: the reads say what is there
            wait_for(drained, timeout=max(1.0, deadline - time.monotonic()), interval=0.05,
                     what="every sink's mailbox drained")
        for sink in self.sinks:
            self.history.invoke("final", "read", {"to": sink})
            status, result = client.attempt("state", name=sink)
            if status == "ok":
                applied = (result.get("state") or {}).get("applied", [])
                self.history.ok("final", "read", {"to": sink, "applied": applied})
            else:
                getattr(self.history, status)("final", "read", result)
        if not self.with_workflows:
            client.close()
            return
        for wf_id in self.workflow_ids:
            self.history.invoke("final", "wf-final", {"id": wf_id})
            final = self._workflow_final(client, wf_id, deadline)
            if final is None:
                self.history.info("final", "wf-final", {"id": wf_id})
            else:
                self.history.ok("final", "wf-final", final)
        self.history.invoke("final", "wf-effects", {})
        lines = self.effects.read_text().split() if self.effects.exists() else []
        counts: dict[str, int] = {}
        for line in lines:
            counts[line] = counts.get(line, 0) + 1
        self.history.ok("final", "wf-effects", {"counts": counts})
        client.close()

    def _workflow_final(self, client: Client, wf_id: str, deadline: float) -> dict[str, Any] | None:
        while True:
            status, result = client.attempt("workflow", op="status", id=wf_id)
            if status == "fail" and result.get("error") == ErrorCode.NO_SUCH_CHILD:
                return {"id": wf_id, "missing": True}
            if status == "ok" and (result["state"] != "running" or time.monotonic() > deadline):
                return {"id": wf_id, "state": result["state"],
                        "steps": {s["id"]: s["state"] for s in result["steps"]}}
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)  # polling the workflow's state until it settles (a deadline bounds it)
