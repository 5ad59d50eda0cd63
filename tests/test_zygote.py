"""The agent fork server (agents/zygote.py, daemon/shell/forkserver.py): a forked agent is the process an exec'd one
would be, the zygote is supervised like a child, and whenever it cannot answer the agent is exec'd instead.

Real daemons, real zygotes, real agents; the ForkServer tests at the end drive the daemon-side class with real
processes standing in for a zygote that never answers or answers nonsense.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from helpers import REPO, RealProcesses

from agents.testing import DaemonProcess, exited, wait_for
from daemon.core.spec import WorkerSpec
from daemon.shell.forkserver import ForkServer, fork_refusal
from ipc.errors import ErrorCode, FoundationError

FACTS = "tests.agents_for_tests:Facts"


def tree(*children: str, fork_server: bool = True) -> str:
    daemon = "" if fork_server else "[daemon]\nfork_server = false\n"
    return daemon + "[supervisor]\nintensity = 1000\nperiod = 1\n" + "".join(children)


def agent(name: str, ref: str = FACTS, **extra: Any) -> str:
    lines = ["[[supervisor.children]]", f'name = "{name}"', f'agent = "{ref}"', f'working_dir = "{REPO}"']
    for key, value in extra.items():
        lines.append(f"{key} = {orjson.dumps(value).decode()}" if not isinstance(value, dict) else
                     f"{key} = {{ {', '.join(f'{k} = {orjson.dumps(v).decode()}' for k, v in value.items())} }}")
    return "\n".join(lines) + "\n"


def call(daemon: DaemonProcess, name: str, body: Any) -> Any:
    with daemon.client() as client:
        return client.request("call", name=name, body=body)["reply"]


def zygote(daemon: DaemonProcess) -> dict[str, Any]:
    with daemon.client() as client:
        return client.request("status")["daemon"]["zygote"]


def facts_of(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    daemon.wait_running(name)
    return call(daemon, name, {"facts": True})


def execd(pid: int) -> bool:
    """The kernel's argv of an exec'd process is NUL-separated; a forked agent's is one rewritten title."""
    return len([part for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]) > 1


def comparable(facts: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between a forked and an exec'd agent: everything but the pids and per-run values."""
    env = {k: v for k, v in facts["env"].items()
           if k not in ("FOUNDATION_DAEMON_PID", "FOUNDATION_AGENT_TOKEN", "FOUNDATION_BROKER",
                        "FOUNDATION_RUNTIME_DIR", "FOUNDATION_STATE_DIR")}
    keep = {k: v for k, v in facts.items() if k not in ("pid", "ppid", "pgid", "sid", "env", "main")}
    return {**keep, "env": env}


# ---- a forked agent is the process an exec'd one would be ----


def test_a_forked_agent_looks_like_an_exec_d_one(start_daemon) -> None:
    spec = agent("facts", umask="0027", env={"GREETING": "hello"})
    forked_daemon = start_daemon(tree(spec))
    forked = facts_of(forked_daemon, "facts")
    assert zygote(forked_daemon)["spawns"] == 1
    exec_daemon = start_daemon(tree(spec, fork_server=False))
    execd = facts_of(exec_daemon, "facts")
    described = zygote(exec_daemon)
    assert (described["state"], described["pid"], described["spares"], described["spawns"]) == ("disabled", None, [], 0)

    assert comparable(forked) == comparable(execd)
    for facts, daemon in ((forked, forked_daemon), (execd, exec_daemon)):
        assert facts["ppid"] == daemon.proc.pid, "foundationd is the parent: it reaps the agent"
        assert facts["pgid"] == facts["pid"], "its own process group"
        assert facts["cwd"] == str(REPO)
        assert facts["umask"] == 0o027
        assert facts["env"]["GREETING"] == "hello"
        assert facts["env"]["FOUNDATION_NAME"] == "facts"
        assert facts["std"] == ["file", "pipe", "pipe"]
        assert "socket" in facts["fd_kinds"]  # the agent's own DEALER, nothing of the zygote's
    assert "FOUNDATION_ENVIRON_ROOM" not in forked["env"]
    assert forked["fd_kinds"] == execd["fd_kinds"], "the zygote's socket and pipes are not inherited"
    # What ps, psutil and the leak checks read from /proc is the agent's, not the zygote's.
    proc = psutil.Process(forked["pid"])
    assert proc.cmdline()[1:] == ["-m", "agents.runtime", FACTS]
    assert proc.environ()["FOUNDATION_NAME"] == "facts"
    assert proc.environ()["FOUNDATION_RUNTIME_DIR"] == str(forked_daemon.runtime_dir)
    assert proc.name() == Path(sys.executable).name


def test_agents_that_need_an_exec_are_execd(start_daemon) -> None:
    daemon = start_daemon(tree(agent("plain"), agent("tuned", env={"PYTHONHASHSEED": "7"})))
    daemon.wait_running("plain")
    tuned = facts_of(daemon, "tuned")
    assert tuned["env"]["PYTHONHASHSEED"] == "7"
    assert tuned["argv"] == [FACTS]
    raw = Path(f"/proc/{tuned['pid']}/cmdline").read_bytes().split(b"\0")
    assert raw[1:4] == [b"-m", b"agents.runtime", FACTS.encode()], "exec'd: the kernel's own argv"
    assert not execd(daemon.wait_running("plain"))
    assert zygote(daemon)["spawns"] == 1, "only `plain` came from the zygote"


@pytest.mark.parametrize(("settings", "reason"), [
    ({"command": ("sleep", "1")}, "not an SDK agent"),
    ({"agent": FACTS, "user": "nobody"}, "another user"),
    ({"agent": FACTS, "limits": (("nofile", 64, 64),)}, "resource limits"),
    ({"agent": FACTS, "env": (("LD_PRELOAD", "x.so"),)}, "LD_PRELOAD"),
    ({"agent": FACTS, "env": (("PYTHONPATH", "/x"),)}, "PYTHONPATH"),
])
def test_fork_refusal_names_what_only_an_exec_applies(settings: dict[str, Any], reason: str) -> None:
    refusal = fork_refusal(WorkerSpec(name="w", **settings))
    assert refusal is not None
    assert reason in refusal
    assert fork_refusal(WorkerSpec(name="w", agent=FACTS, env=(("GREETING", "x"),), umask=0o22)) is None


# ---- the zygote is supervised ----


def test_a_killed_zygote_is_replaced_and_agents_keep_starting(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a"), agent("b")))
    first = facts_of(daemon, "a")
    old = wait_for(lambda: (z := zygote(daemon))["state"] == "ready" and len(z["spares"]) == 2 and z, what="spares")
    os.kill(old["pid"], signal.SIGKILL)
    new = wait_for(lambda: (z := zygote(daemon))["pid"] not in (None, old["pid"]) and z["state"] == "ready" and z,
                   what="a new zygote")
    assert new["last_error"] == "exited (killed by SIGKILL)"
    assert set(old["spares"]) <= set(new["spares"]), "spares made by the dead zygote are still good"
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_for(lambda: (f := facts_of(daemon, "a"))["pid"] != first["pid"] and f, what="a restarted")
    assert again["pid"] in old["spares"], "the restart took a spare"
    assert again["ppid"] == daemon.proc.pid
    assert zygote(daemon)["spawns"] == old["spawns"] + 1
    assert exited(old["pid"])


def test_a_spare_that_dies_unused_is_replaced(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a")))
    first = facts_of(daemon, "a")
    spares = wait_for(lambda: len(s := zygote(daemon)["spares"]) == 2 and s, what="two spares")
    assert all(psutil.Process(pid).ppid() == daemon.proc.pid for pid in spares), "adopted by foundationd"
    assert all(psutil.Process(pid).cmdline()[1:] == ["-m", "agents.zygote", "(spare)"] for pid in spares)
    os.kill(spares[0], signal.SIGKILL)
    fresh = wait_for(lambda: len(s := zygote(daemon)["spares"]) == 2 and spares[0] not in s and s,
                     what="a replacement spare")
    assert spares[1] in fresh
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_for(lambda: (f := facts_of(daemon, "a"))["pid"] != first["pid"] and f, what="a restarted")
    assert again["pid"] == spares[1], "the oldest live spare is used first"


def test_a_tree_of_many_agents_keeps_more_spares(start_daemon) -> None:
    """Its boot starts the agents back to back: a larger pool keeps them from waiting on fresh spares."""
    daemon = start_daemon(tree(*(agent(f"a{i}", "agents.examples.counter:Counter") for i in range(12))))
    for i in range(12):
        daemon.wait_running(f"a{i}")
    described = wait_for(lambda: len((z := zygote(daemon))["spares"]) == 3 and z, what="three spares (12 agents / 4)")
    assert described["spawns"] + described["fallbacks"] == 12  # (at boot, only the first spare is waited for)


def daemon_fds(daemon: DaemonProcess) -> list[str]:
    fds = Path(f"/proc/{daemon.proc.pid}/fd")
    return sorted(os.readlink(fd) for fd in fds.iterdir() if fd.exists())


def test_agent_restarts_from_spares_leak_no_descriptor(start_daemon) -> None:
    """Each restart consumes a spare (its channel, its pidfd) and gets a new one: the daemon's fds stay put."""
    daemon = start_daemon(tree(agent("a")))
    pid = daemon.wait_running("a")
    wait_for(lambda: len(zygote(daemon)["spares"]) == 2, what="two spares")
    with daemon.client() as client:
        client.request("status")
        baseline = daemon_fds(daemon)
        for _ in range(12):
            os.kill(pid, signal.SIGKILL)
            pid = daemon.wait_running("a", not_pid=pid)
            wait_for(lambda: len(zygote(daemon)["spares"]) == 2, what="the pool refilled")
        assert zygote(daemon)["spawns"] == 13
        kinds = lambda fds: sorted(t.split(":")[0] for t in fds)  # noqa: E731 - pipe:[inode] -> pipe
        wait_for(lambda: kinds(daemon_fds(daemon)) == kinds(baseline), timeout=5,
                 what=f"the daemon's fds back to {baseline}: {daemon_fds(daemon)}")


def test_the_zygote_and_its_spares_die_with_a_sigkilled_daemon(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a")))
    daemon.wait_running("a")
    described = wait_for(lambda: len((z := zygote(daemon))["spares"]) == 2 and z, what="two spares")
    daemon.kill(signal.SIGKILL)
    daemon.wait_exit()
    for pid in (described["pid"], *described["spares"]):
        wait_for(lambda p=pid: exited(p), what=f"{pid} gone with its daemon")


def test_the_helpers_output_is_kept_like_a_childs(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a")))
    daemon.wait_running("a")
    with daemon.client() as client:
        for name in ("(zygote)", "(guardian)"):
            assert client.request("logs", name=name, lines=10) == {"name": name, "lines": [], "more": False}
        with pytest.raises(FoundationError) as caught:
            client.request("logs", name="(nobody)")
        assert caught.value.code == ErrorCode.NO_SUCH_CHILD


def test_no_zygote_without_agents(start_daemon) -> None:
    daemon = start_daemon(tree("[[supervisor.children]]\nname = \"s\"\ncommand = [\"sleep\", \"100\"]\n"))
    daemon.wait_running("s")
    assert zygote(daemon)["state"] == "off"
    assert not [p for p in psutil.Process(daemon.proc.pid).children() if "agents.zygote" in " ".join(p.cmdline())]


def test_an_agent_attached_later_starts_the_zygote_for_the_next_ones(start_daemon) -> None:
    daemon = start_daemon(tree("[[supervisor.children]]\nname = \"s\"\ncommand = [\"sleep\", \"100\"]\n"))
    daemon.wait_running("s")
    with daemon.client() as client:
        client.request("attach", name="late", spec={"name": "late", "agent": FACTS, "working_dir": str(REPO)})
    first = facts_of(daemon, "late")
    assert first["ppid"] == daemon.proc.pid
    assert execd(first["pid"]), "the zygote it started was not ready yet"
    assert zygote(daemon)["fallbacks"] == 1
    wait_for(lambda: len(zygote(daemon)["spares"]) == 2, what="the zygote's spares")
    with daemon.client() as client:
        client.request("restart", name="late")
    again = facts_of(daemon, "late")
    assert not execd(again["pid"])
    assert zygote(daemon)["spawns"] == 1


# ---- the zygote's protocol, and the daemon side when the zygote fails ----


def run_zygote() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {"PATH": os.environ.get("PATH", ""), "FOUNDATION_DAEMON_PID": str(os.getpid())}
    proc = subprocess.Popen([sys.executable, "-P", "-m", "agents.zygote", str(theirs.fileno())], cwd=REPO,
                            pass_fds=(theirs.fileno(),), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    theirs.close()
    ours.settimeout(30)
    assert orjson.loads(ours.recv(4096))["ready"] is True
    return proc, ours


def test_the_zygote_answers_bad_requests_with_an_error_and_keeps_serving() -> None:
    proc, sock = run_zygote()
    try:
        for bad in (b"{not json", b"[1, 2]", b'{"spares": 0}', b'{"spares": "2"}', b'{"spares": true}',
                    b'{"spares": 17}', b'{"pid": 1}'):
            sock.send(bad)
            assert "error" in orjson.loads(sock.recv(4096)), bad
        sock.send(b'{"spares": 1}')
        data, fds, _, _ = socket.recv_fds(sock, 4096, 2)
        for fd in fds:
            os.close(fd)
        assert len(fds) == 1
        pid = orjson.loads(data)["spare"]
        # Not adopted by a subreaper here: the spare finds its parent is not its daemon and leaves by itself.
        wait_for(lambda: exited(pid), what="the orphaned spare's exit")
        assert proc.poll() is None, "still serving"
    finally:
        sock.close()  # EOF: the zygote leaves its loop
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        proc.stdout.close()


class FakeZygotes(RealProcesses):
    """Real processes launched where ForkServer expects a zygote: ``script`` decides what they say."""

    def __init__(self, script: str) -> None:
        super().__init__(script)
        self.readers: dict[int, Any] = {}

    def server(self, **kw: Any) -> ForkServer:
        return ForkServer(self.launch, self.kill, lambda pid: None, add_reader=self.readers.__setitem__,
                          remove_reader=self.readers.pop, env=dict, **kw)

    def launch(self, argv: list[str], env: dict[str, str], fds: tuple[int, ...]) -> int:
        assert argv[-1] == str(fds[0])
        return self.started(subprocess.Popen([sys.executable, "-c", self.script, argv[-1]], pass_fds=fds))


SILENT = "import time; time.sleep(60)"
MUTE = ("import socket, sys, time; s = socket.socket(fileno=int(sys.argv[1])); s.send(b'{\"ready\": true}');"
        "s.recv(4096); time.sleep(60)")
BABBLER = ("import socket, sys; s = socket.socket(fileno=int(sys.argv[1])); s.send(b'{\"ready\": true}');"
           "s.recv(4096); s.send(b'not json'); s.recv(4096)")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_zygote_that_never_gets_ready_is_killed_then_given_up() -> None:
    fakes, clock = FakeZygotes(SILENT), Clock()
    server = fakes.server(boot_wait=5, clock=clock)
    try:
        server.start()
        for attempt in range(1, 4):
            assert server.state == "booting"
            assert server.spawn({"agent": "x:Y"}, 1) is None, "no spare: the caller execs"
            clock.now += 6
            assert server.spawn({"agent": "x:Y"}, 1) is None
            assert fakes.killed[-1] == fakes.procs[attempt - 1].pid, "the stuck zygote is killed"
        assert server.state == "disabled"
        assert "not ready after 5 s" in (server.last_error or "")
        assert len(fakes.procs) == 3, "given up: no fourth zygote"
        assert server.fallbacks == 6
        assert fakes.readers == {}, "no socket left on the loop"
    finally:
        fakes.reap()


def test_a_zygote_that_answers_nonsense_is_killed_and_replaced_until_given_up() -> None:
    fakes = FakeZygotes(BABBLER)
    server = fakes.server()
    try:
        server.start()
        assert server.wait_for_spare(30) is False
        assert server.state == "disabled"
        assert "bad message" in (server.last_error or "")
        assert fakes.killed == [proc.pid for proc in fakes.procs]
        assert len(fakes.procs) == 3
        assert fakes.readers == {}
    finally:
        fakes.reap()


def test_without_a_spare_at_hand_the_agent_is_execd_and_the_zygote_kept() -> None:
    fakes = FakeZygotes(MUTE)
    server = fakes.server()
    try:
        server.start()
        readable = next(iter(fakes.readers.values()))
        wait_for(lambda: readable() or server.state == "ready", what="ready")
        assert server.spawn({"agent": "x:Y"}, 1) is None
        assert (server.state, server.fallbacks, fakes.killed) == ("ready", 1, [])
    finally:
        server.close()
        fakes.reap()


def test_a_reload_can_turn_the_fork_server_off_and_on(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a")))
    first = facts_of(daemon, "a")
    before = wait_for(lambda: len((z := zygote(daemon))["spares"]) == 2 and z, what="spares")
    assert daemon.config_path is not None
    daemon.config_path.write_text(tree(agent("a"), fork_server=False))
    with daemon.client() as client:
        client.request("reload")
    assert zygote(daemon)["state"] == "disabled"
    for pid in (before["pid"], *before["spares"]):
        wait_for(lambda p=pid: exited(p), what=f"{pid}, the zygote or a spare, stopped")
    assert facts_of(daemon, "a")["pid"] == first["pid"], "running agents are untouched"
    daemon.config_path.write_text(tree(agent("a")))
    with daemon.client() as client:
        client.request("reload")
    wait_for(lambda: len(zygote(daemon)["spares"]) == 2, what="the new zygote's spares")
    with daemon.client() as client:
        client.request("restart", name="a")
    again = facts_of(daemon, "a")
    assert again["ppid"] == daemon.proc.pid
    assert not execd(again["pid"])
