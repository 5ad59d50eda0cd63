"""Security under a second uid (issue 16, item 5), as root: a client running as ``nobody`` cannot reach the control
socket or the broker's; a ``control_group`` member reads but cannot mutate (nor send); every mutation is logged with
the peer's uid and pid; a child with ``user`` runs as that user with no capabilities and none of the daemon's
descriptors. Skipped unless root.

Covered elsewhere: an agent cannot say hello as another (tokens: tests/test_messaging.py); per-user broker sockets
(tests/test_agent_users.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.testing import DaemonProcess, WaitTimeout, wait_for

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under a second uid")]

NOBODY = 65534
# An interpreter the second uid can run (this one may sit under /root); the client needs only the standard library.
PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
COUNTER = """
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""
# A client that imports nothing of Foundation (the second uid needs no access to the repository): connect, send
# one request line, print the reply or the errno.
CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": exc.errno})); sys.exit(0)
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode().strip() or json.dumps({"closed": True}))
"""


def as_nobody(path: str, request: dict[str, Any] | None = None, gid: int = NOBODY) -> dict[str, Any]:
    if PYTHON is None:
        pytest.skip("no system python3 for the second uid")
    out = subprocess.run([PYTHON, "-I", "-S", "-c", CLIENT, path, json.dumps(request or {"verb": "status"})],
                         user=NOBODY, group=gid, extra_groups=[], capture_output=True, text=True, timeout=20,
                         check=True, cwd="/")
    reply: dict[str, Any] = json.loads(out.stdout)
    return reply


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A base directory the second uid may traverse (pytest's own is 0700): what stops it must be the daemon's
    runtime directory and sockets, not a parent."""
    base = Path(tempfile.mkdtemp(prefix="foundation-sec-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def start(base: Path, config: str) -> DaemonProcess:
    d = DaemonProcess(base, config)  # judged and stopped by the pytest plugin like any other
    return d.start()


def test_a_second_uid_cannot_reach_the_control_or_any_broker_socket(open_base: Path) -> None:
    d = start(open_base, COUNTER)
    d.wait_running("counter")
    for sock in ("control.sock", "broker.sock"):
        reply = as_nobody(str(d.runtime_dir / sock))
        assert reply.get("connect_error") == 13, (sock, reply)  # EACCES: the directory is 0700, the socket 0600


def test_a_control_group_member_reads_but_cannot_mutate_and_mutations_are_audited(open_base: Path) -> None:
    d = start(open_base, '[daemon]\ncontrol_group = "nogroup"\n' + COUNTER)
    d.wait_running("counter")
    path = d.socket_path
    status = as_nobody(path, {"id": 1, "verb": "status"})
    assert status["ok"] is True
    assert status["result"]["tree"]["name"] == "root"
    listing = as_nobody(path, {"id": 1, "verb": "workflow", "args": {"op": "list"}})  # a read op of a write verb
    assert listing == {"id": 1, "ok": True, "result": []}
    for verb, args in (("stop", {"name": "counter"}), ("send", {"name": "counter", "body": {"add": 1}}),
                       ("shutdown", {}), ("signal", {"name": "counter", "signal": "KILL"}),
                       ("workflow", {"op": "run", "definition": {"task": {"id": "a", "action": "call",
                                                                         "args": {"agent": "x", "msg": 1}}}})):
        reply = as_nobody(path, {"id": 2, "verb": verb, "args": args})
        assert reply["ok"] is False, (verb, reply)
        assert reply["error"]["code"] == "permission_denied", (verb, reply)
    assert d.node("counter")["state"] == "running"
    assert as_nobody(str(d.runtime_dir / "broker.sock")).get("connect_error") == 13  # the group reads, no more
    # A mutation by root: logged with its uid and pid.
    with d.client() as client:
        client.request("restart", name="counter")
    wait_for(lambda: "control: restart" in d.log() and f"uid=0 pid={os.getpid()}" in d.log(),
             what="the audit line of the restart")


def test_a_child_with_user_runs_as_it_without_capabilities_or_the_daemons_descriptors(start_daemon: Any) -> None:
    d: DaemonProcess = start_daemon("""
[[supervisor.children]]
name = "probe"
command = ["sleep", "1000"]
user = "nobody"
group = "nogroup"
""")
    pid = d.wait_running("probe")
    # Running is declared at spawn; the helper closes what is not the child's before it execs sleep: look after.
    wait_for(lambda: Path(f"/proc/{pid}/comm").read_text().strip() == "sleep", what="the probe's exec of sleep")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split()[:2] == [str(NOBODY), str(NOBODY)]
    assert status["Gid"].split()[:2] == [str(NOBODY), str(NOBODY)]
    assert status["Groups"].split() in ([], [str(NOBODY)])
    for cap in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(status[cap], 16) == 0, (cap, status[cap])
    # The kernel names the process before it has closed the close-on-exec descriptors: wait for the exec's end.
    fds: dict[str, str] = {}

    def only_standard_fds() -> bool:
        fds.clear()
        fds.update({fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")})
        return sorted(fds) == ["0", "1", "2"]  # stdin /dev/null, stdout and stderr to the daemon's capture

    try:
        wait_for(only_standard_fds, timeout=5)
    except WaitTimeout:
        pytest.fail(f"the probe holds more than 0, 1 and 2: {fds}")
