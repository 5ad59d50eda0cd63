"""The real `foundationctl` executable against a real foundationd: output, exit codes, and their effect on the tree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psutil
import pytest
from helpers import SLEEP, ctl

from agents.testing import DaemonProcess, exited, wait_for

CONFIG = f"""
    [supervisor]
    strategy = "one_for_one"
    intensity = 4
    period = 7
    [[supervisor.children]]
    name = "ticker"
    command = {SLEEP}
    [[supervisor.children]]
    name = "pipeline"
    strategy = "rest_for_one"
    [[supervisor.children.children]]
    name = "stage1"
    restart = "transient"
    command = {SLEEP}
    [[supervisor.children.children]]
    name = "stage2"
    restart = "temporary"
    command = {SLEEP}
"""


@pytest.fixture
def daemon(start_daemon) -> DaemonProcess:
    started = start_daemon(CONFIG)
    started.wait_running("stage2")
    return started


def test_status_prints_the_tree(daemon: DaemonProcess) -> None:
    done = ctl(daemon.runtime_dir, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = rf"foundationd pid {daemon.proc.pid}, version \S+, up \d+s, spawn (foundation-exec|setpriv)$"  # type: ignore[union-attr]
    assert re.match(header, lines[0]), lines[0]
    assert re.match(r"root\s+one_for_one\s+running\s+restarts 0 \(4 in 7s\)$", lines[1]), lines[1]
    pids = {name: daemon.pid(name) for name in ("ticker", "stage1", "stage2")}
    assert re.match(rf"├─ ticker\s+running\s+pid {pids['ticker']}\s+up \d+s\s+restarts 0\s+permanent\s+"
                    r"cpu \d+\.\ds\s+rss \d+\.\dM\s+sleep 1000$",
                    lines[2]), lines[2]
    assert re.match(r"└─ pipeline\s+rest_for_one\s+running\s+restarts 0 \(3 in 5s\)$", lines[3]), lines[3]
    assert re.match(rf"   ├─ stage1\s+running\s+pid {pids['stage1']}\s+.*transient", lines[4]), lines[4]
    assert re.match(rf"   └─ stage2\s+running\s+pid {pids['stage2']}\s+.*temporary", lines[5]), lines[5]
    assert len(lines) == 6
    assert done.stderr == ""


def test_status_json_matches_design(daemon: DaemonProcess) -> None:
    done = ctl(daemon.runtime_dir, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert {"pid", "version", "uptime_s"} <= status["daemon"].keys()
    assert status["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert isinstance(status["daemon"]["uptime_s"], float | int)
    root = status["tree"]
    supervisor_keys = {"name", "type", "strategy", "intensity", "period", "state", "restarts", "children"}
    worker_keys = {"name", "type", "pid", "state", "restart", "restarts"}
    assert supervisor_keys <= root.keys()
    assert (root["name"], root["type"], root["strategy"], root["intensity"], root["period"], root["state"],
            root["restarts"]) == ("root", "supervisor", "one_for_one", 4, 7.0, "running", 0)
    ticker, pipeline = root["children"]
    assert worker_keys <= ticker.keys()
    assert (ticker["name"], ticker["type"], ticker["state"], ticker["restart"], ticker["restarts"]) == (
        "ticker", "worker", "running", "permanent", 0)
    assert isinstance(ticker["pid"], int)
    assert psutil.pid_exists(ticker["pid"])
    assert supervisor_keys <= pipeline.keys()
    assert pipeline["strategy"] == "rest_for_one"
    assert [(c["name"], c["restart"]) for c in pipeline["children"]] == [
        ("stage1", "transient"), ("stage2", "temporary")]
    for child in pipeline["children"]:
        assert worker_keys <= child.keys()
        assert child["state"] in ("starting", "running", "stopping", "stopped", "failed")


def test_status_json_of_a_stopped_child(daemon: DaemonProcess) -> None:
    assert ctl(daemon.runtime_dir, "stop", "ticker").returncode == 0
    ticker = json.loads(ctl(daemon.runtime_dir, "status", "--json").stdout)["tree"]["children"][0]
    assert (ticker["state"], ticker["pid"]) == ("stopped", None)


@pytest.mark.parametrize("verb", [["status"], ["status", "--json"], ["stop", "x"], ["shutdown"]])
def test_exit_3_when_the_daemon_is_not_running(tmp_path: Path, verb: list[str]) -> None:
    done = ctl(tmp_path / "no-daemon", *verb)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.startswith("error: cannot reach foundationd at ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_exit_3_after_the_daemon_is_gone(daemon: DaemonProcess) -> None:
    daemon.kill()
    daemon.wait_exit()
    assert ctl(daemon.runtime_dir, "status").returncode == 3  # a stale socket file refuses the connection


def test_attach_and_detach_via_cli(daemon: DaemonProcess) -> None:
    done = ctl(daemon.runtime_dir, "attach", "extra", "--", "sleep", "1000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "attached extra to root"
    node = daemon.node("extra")
    assert node["state"] == "running"
    assert node["command"] == ["sleep", "1000"]
    pid = node["pid"]

    done = ctl(daemon.runtime_dir, "attach", "stage3", "--parent", "pipeline", "--restart", "transient",
               "--json", "--", "sleep", "1000")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "stage3"
    assert [c["name"] for c in daemon.node("pipeline")["children"]] == ["stage1", "stage2", "stage3"]
    assert daemon.node("stage3")["restart"] == "transient"

    done = ctl(daemon.runtime_dir, "detach", "extra")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "detached extra"
    assert exited(pid)
    with pytest.raises(KeyError):
        daemon.node("extra")
    assert ctl(daemon.runtime_dir, "detach", "stage3").returncode == 0
    assert [c["name"] for c in daemon.node("pipeline")["children"]] == ["stage1", "stage2"]


def test_attach_duplicate_name_exits_1(daemon: DaemonProcess) -> None:
    pid = daemon.pid("ticker")
    done = ctl(daemon.runtime_dir, "attach", "ticker", "--", "sleep", "1000")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: already_exists: ")
    assert daemon.pid("ticker") == pid
    assert [c["name"] for c in daemon.status()["tree"]["children"]] == ["ticker", "pipeline"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["stop", "ghost"], "no_such_child"),
        (["start", "ghost"], "no_such_child"),
        (["restart", "ghost"], "no_such_child"),
        (["detach", "ghost"], "no_such_child"),
        (["attach", "x", "--parent", "ticker", "--", "sleep", "1"], "not_a_supervisor"),
        (["attach", "x", "--parent", "ghost", "--", "sleep", "1"], "no_such_child"),
        (["attach", "x", "--", "/nonexistent/program"], "spawn_failed"),
        (["stop", "root"], "bad_request"),
    ],
)
def test_daemon_errors_exit_1(daemon: DaemonProcess, args: list[str], code: str) -> None:
    done = ctl(daemon.runtime_dir, *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: {code}: ")
    assert daemon.status()["tree"]["state"] == "running"


@pytest.mark.parametrize(
    "args",
    [["attach", "x"], ["attach", "x", "--agent", "a.b:C", "--", "sleep"], ["stop"], ["frobnicate"], []],
)
def test_usage_errors_exit_2_and_send_nothing(daemon: DaemonProcess, args: list[str]) -> None:
    before = daemon.status()["tree"]
    done = ctl(daemon.runtime_dir, *args)
    assert done.returncode == 2
    assert daemon.status()["tree"]["children"][0]["pid"] == before["children"][0]["pid"]


def test_stop_start_restart_via_cli(daemon: DaemonProcess) -> None:
    first = daemon.pid("ticker")
    done = ctl(daemon.runtime_dir, "stop", "ticker")
    assert (done.returncode, done.stdout.strip()) == (0, "stopped ticker")
    assert exited(first)
    done = ctl(daemon.runtime_dir, "start", "ticker")
    assert done.returncode == 0
    second = daemon.pid("ticker")
    assert done.stdout.strip() == f"started ticker (pid {second})"
    done = ctl(daemon.runtime_dir, "restart", "ticker", "--json")
    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert result["state"] == "running"
    assert result["pid"] not in (first, second)
    assert exited(second)


def test_shutdown_via_cli(daemon: DaemonProcess) -> None:
    pids = [daemon.pid(name) for name in ("ticker", "stage1", "stage2")]
    done = ctl(daemon.runtime_dir, "shutdown")
    assert (done.returncode, done.stdout.strip()) == (0, "foundationd is shutting down")
    assert daemon.wait_exit() == 0, daemon.log()
    assert all(exited(pid) for pid in pids)
    wait_for(lambda: ctl(daemon.runtime_dir, "status").returncode == 3, what="the socket gone")
