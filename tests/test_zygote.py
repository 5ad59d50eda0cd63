"""The agent fork server (agents/zygote.py, daemon/forkserver.py): a forked agent is the process an exec'd one
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

from agents.testing import DaemonProcess, wait_for
from daemon.forkserver import ForkServer, fork_refusal
from daemon.spec import WorkerSpec
from ipc.errors import ErrorCode, FoundationError

REPO = Path(__file__).resolve().parents[1]
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
    assert zygote(exec_daemon) | {"pid": None} == {"state": "disabled", "pid": None, "spawns": 0, "fallbacks": 0,
                                                   "last_error": None}

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
    assert tuned["main"] == "__main__"
    assert tuned["argv"] == [FACTS]
    # Exec'd: the kernel's argv is the real one, NUL-separated (a forked agent's is one rewritten title).
    raw = Path(f"/proc/{tuned['pid']}/cmdline").read_bytes().split(b"\0")
    assert raw[1:4] == [b"-m", b"agents.runtime", FACTS.encode()]
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
    old = zygote(daemon)
    assert old["state"] == "ready"
    os.kill(old["pid"], signal.SIGKILL)
    wait_for(lambda: zygote(daemon)["state"] == "off", what="foundationd noticed the zygote's death")
    assert zygote(daemon)["last_error"] == "exited (killed by SIGKILL)"
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_for(lambda: (f := facts_of(daemon, "a"))["pid"] != first["pid"] and f, what="a restarted")
    new = zygote(daemon)
    assert new["state"] == "ready"
    assert new["pid"] not in (None, old["pid"])
    assert again["ppid"] == daemon.proc.pid
    assert new["spawns"] == old["spawns"] + 1
    assert not psutil.pid_exists(old["pid"]) or psutil.Process(old["pid"]).status() == psutil.STATUS_ZOMBIE


def test_the_zygote_dies_with_a_sigkilled_daemon(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a")))
    daemon.wait_running("a")
    pid = zygote(daemon)["pid"]
    daemon.kill(signal.SIGKILL)
    daemon.wait_exit()
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             what="zygote gone with its daemon")


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


def test_an_agent_attached_later_starts_the_zygote(start_daemon) -> None:
    daemon = start_daemon(tree("[[supervisor.children]]\nname = \"s\"\ncommand = [\"sleep\", \"100\"]\n"))
    daemon.wait_running("s")
    with daemon.client() as client:
        client.request("attach", name="late", spec={"name": "late", "agent": FACTS, "working_dir": str(REPO)})
    facts = facts_of(daemon, "late")
    assert facts["ppid"] == daemon.proc.pid
    assert zygote(daemon)["spawns"] == 1


# ---- the zygote's protocol, and the daemon side when the zygote fails ----


def run_zygote(tmp_path: Path) -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {"PATH": os.environ.get("PATH", ""), "FOUNDATION_DAEMON_PID": str(os.getpid())}
    proc = subprocess.Popen([sys.executable, "-P", "-m", "agents.zygote", str(theirs.fileno())], cwd=REPO,
                            pass_fds=(theirs.fileno(),), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    theirs.close()
    ours.settimeout(30)
    assert orjson.loads(ours.recv(4096))["ready"] is True
    return proc, ours


def test_the_zygote_answers_bad_requests_with_an_error_and_keeps_serving(tmp_path: Path) -> None:
    proc, sock = run_zygote(tmp_path)
    try:
        sock.send(b"{not json")
        assert "JSONDecodeError" in orjson.loads(sock.recv(4096))["error"]
        sock.send(orjson.dumps({"agent": "x:Y"}))
        assert "no output fd" in orjson.loads(sock.recv(4096))["error"]
        r, w = os.pipe()
        try:
            socket.send_fds(sock, [orjson.dumps({"agent": "no-colon"})], [w])
            assert "bad agent reference" in orjson.loads(sock.recv(4096))["error"]
            socket.send_fds(sock, [orjson.dumps({"agent": 7})], [w])
            assert "bad agent reference" in orjson.loads(sock.recv(4096))["error"]
        finally:
            os.close(r)
            os.close(w)
        sock.send(orjson.dumps([1, 2]))
        assert "error" in orjson.loads(sock.recv(4096))
        assert proc.poll() is None, "still serving"
    finally:
        sock.close()  # EOF: the zygote leaves its loop
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        proc.stdout.close()


class FakeZygotes:
    """Real processes launched where ForkServer expects a zygote: ``script`` decides what they say."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.procs: list[subprocess.Popen[bytes]] = []

    def launch(self, argv: list[str], env: dict[str, str], fds: tuple[int, ...]) -> int:
        assert argv[-1] == str(fds[0])
        proc = subprocess.Popen([sys.executable, "-c", self.script, argv[-1]], pass_fds=fds)
        self.procs.append(proc)
        return proc.pid

    def kill(self, pid: int) -> None:
        for proc in self.procs:
            if proc.pid == pid:
                proc.kill()

    def reap(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=30)


SILENT = "import sys, time; time.sleep(60)"
BABBLER = ("import socket, sys; s = socket.socket(fileno=int(sys.argv[1])); s.send(b'{\"ready\": true}');"
           "s.recv(4096); s.send(b'not json'); s.recv(4096)")


def test_a_zygote_that_never_gets_ready_is_killed_then_given_up(tmp_path: Path) -> None:
    fakes = FakeZygotes(SILENT)
    server = ForkServer(fakes.launch, fakes.kill, boot_wait=0.2)
    try:
        for attempt in range(1, 4):
            server.start({})
            assert server.state == "booting"
            assert server.spawn({"agent": "x:Y"}, 1) is None, "the caller execs instead"
            assert fakes.procs[-1].wait(timeout=30) == -signal.SIGKILL, "the stuck zygote is killed"
            assert server.fallbacks == attempt
        assert server.state == "disabled"
        assert "not ready" in (server.last_error or "")
        server.start({})
        assert len(fakes.procs) == 3, "given up: no fourth zygote"
    finally:
        fakes.reap()


def test_a_zygote_that_answers_nonsense_is_killed_and_replaced(tmp_path: Path) -> None:
    fakes = FakeZygotes(BABBLER)
    server = ForkServer(fakes.launch, fakes.kill, boot_wait=30)
    try:
        server.start({})
        r, w = os.pipe()
        try:
            assert server.spawn({"agent": "x:Y"}, w) is None
        finally:
            os.close(r)
            os.close(w)
        assert server.state == "off"
        assert "bad reply" in (server.last_error or "")
        assert fakes.procs[0].wait(timeout=30) in (0, -signal.SIGKILL)
        server.start({})
        assert server.state == "booting"
        assert len(fakes.procs) == 2
    finally:
        server.close()
        fakes.reap()


def test_a_reload_can_turn_the_fork_server_off_and_on(start_daemon) -> None:
    daemon = start_daemon(tree(agent("a")))
    first = facts_of(daemon, "a")
    old = zygote(daemon)["pid"]
    assert daemon.config_path is not None
    daemon.config_path.write_text(tree(agent("a"), fork_server=False))
    with daemon.client() as client:
        client.request("reload")
    assert zygote(daemon)["state"] == "disabled"
    wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE,
             what="the zygote stopped")
    assert facts_of(daemon, "a")["pid"] == first["pid"], "running agents are untouched"
    daemon.config_path.write_text(tree(agent("a")))
    with daemon.client() as client:
        client.request("reload")
        client.request("restart", name="a")
    assert zygote(daemon)["state"] == "ready"
    assert facts_of(daemon, "a")["ppid"] == daemon.proc.pid
