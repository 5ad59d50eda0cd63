"""Issue 11 defects 1 and 2 with a real daemon: a bad attach is refused with its reason and leaves the tree as it
was (OTP's start_child), and a start failure at boot is named in the halting line."""

from __future__ import annotations

import pytest
from helpers import SLEEP, ctl

from agents.testing import DaemonProcess

TREE = f"""
[supervisor]
intensity = 1
period = 60
[[supervisor.children]]
name = "keeper"
command = {SLEEP}
"""


@pytest.mark.parametrize(("args", "reason"), [
    (["--agent", "nosuch:Thing"],
     "ghost2 failed to start: exited with status 1 before it was ready: cannot load nosuch:Thing: no module named "
     "'nosuch'"),
    (["--", "sh", "-c", "exit 7"], "ghost2 failed to start: exited with status 7 before it was ready"),
])
def test_a_bad_attach_is_refused_and_the_tree_is_untouched(start_daemon, args: list[str], reason: str) -> None:
    d: DaemonProcess = start_daemon(TREE)
    keeper = d.wait_running("keeper")
    extra = ["--set", 'ready="notify"'] if args[0] == "--" else []  # a command is started once it says READY=1
    out = ctl(d, "attach", "ghost2", *extra, *args)
    assert out.returncode == 1, out.stdout
    assert out.stderr.strip().startswith(f"error: spawn_failed: {reason}")
    assert out.stderr.strip().endswith("; not attached")
    names = [c["name"] for c in d.status()["tree"]["children"]]
    assert names == ["keeper"]
    assert d.pid("keeper") == keeper
    assert d.status()["tree"]["restarts"] == 0  # no crash was counted: intensity 1 is intact
    assert ctl(d, "attach", "fine", "--", "sleep", "1000").returncode == 0


def test_a_start_failure_at_boot_names_what_failed(start_daemon) -> None:
    d: DaemonProcess = start_daemon(TREE + '[[supervisor.children]]\nname = "ghost"\ncommand = ["/no/such/program"]\n',
                                    wait=False)
    d.expect_exit(1)
    assert d.wait_exit() == 1
    assert ("halting: root supervisor failed: ghost failed to start: /no/such/program: not an executable file"
            in d.log())


def test_a_crash_looping_child_set_to_park_is_set_aside_and_the_tree_runs_on(start_daemon) -> None:
    d: DaemonProcess = start_daemon(TREE + '[[supervisor.children]]\nname = "loop"\ncommand = ["false"]\n'
                                    'on_intensity = "park"\n')
    keeper = d.wait_running("keeper")
    d.wait_log("parking loop (more than 1 restarts in 60s)")
    node = d.node("loop")
    assert node["state"] == "failed"
    assert node["parked"] is True
    assert d.status()["tree"]["state"] == "running"
    assert d.pid("keeper") == keeper
