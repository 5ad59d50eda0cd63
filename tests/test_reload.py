"""Reload (the `reload` verb, SIGHUP, `foundationctl reload`) against a real foundationd and real processes.

What a reload must do: leave unchanged children alone (same pids), restart changed ones with their new command,
stop removed ones for good, start added ones at their place in the config, change supervisor settings in place,
and refuse an invalid config without touching anything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import CHILDREN, children_of, ctl, rewrite

from agents.testing import DaemonProcess, exited, wait_for
from ipc.errors import ErrorCode, FoundationError


def sleep(seconds: int = 1000) -> str:
    return json.dumps(["sleep", str(seconds)])


def worker(name: str, seconds: int = 1000, prefix: str = "supervisor.children") -> str:
    return f"""
        [[{prefix}]]
        name = "{name}"
        command = {sleep(seconds)}
    """


def tree(
    *,
    root: str = "intensity = 3\nperiod = 5",
    before_sub: str | None = None,
    sub: str = 'strategy = "one_for_all"\nintensity = 3',
    inner: str | None = None,
    after_sub: str | None = None,
) -> str:
    """The reference tree; the keyword arguments say what a test changes in it.

        root: keep, change, gone, sub (one_for_all: inner_keep, inner_change), mover
    """
    return "\n".join([
        "[supervisor]",
        root,
        worker("keep") + worker("change") + worker("gone") if before_sub is None else before_sub,
        '[[supervisor.children]]\nname = "sub"',
        sub,
        worker("inner_keep", prefix="supervisor.children.children")
        + worker("inner_change", prefix="supervisor.children.children") if inner is None else inner,
        worker("mover") if after_sub is None else after_sub,
    ])


BASE = tree()


def pids(daemon: DaemonProcess) -> dict[str, int | None]:
    out = {}
    todo = [daemon.status()["tree"]]
    while todo:
        node = todo.pop()
        if node["type"] == "worker":
            out[node["name"]] = node["pid"]
        todo.extend(node.get("children", []))
    return out


def runs(pid: int, seconds: int) -> bool:
    """The process is (once it is through the daemon's exec chain) `sleep SECONDS`."""

    def check() -> bool:
        argv = psutil.Process(pid).cmdline()
        return len(argv) == 2 and Path(argv[0]).name == "sleep" and argv[1] == str(seconds)

    return wait_for(check, what=f"pid {pid} running sleep {seconds}")


def all_running(daemon: DaemonProcess) -> dict[str, int]:
    def check() -> dict[str, Any] | None:
        found = pids(daemon)
        states = {n: daemon.node(n)["state"] for n in found}
        return found if all(s == "running" for s in states.values()) else None

    return wait_for(check, what="every worker running")


@pytest.fixture
def daemon(start_daemon) -> DaemonProcess:
    started = start_daemon(BASE)
    all_running(started)
    return started


# ---- what changes and what does not ----


def test_reload_adds_removes_and_changes_children(daemon: DaemonProcess) -> None:
    before = pids(daemon)
    rewrite(daemon, tree(before_sub=worker("keep") + worker("new1") + worker("change", 1001),
                         after_sub=worker("mover") + worker("new2")))
    summary = daemon.request("reload")
    assert summary == {"removed": ["gone"], "updated": [], "restarted": ["change"],
        "added": ["new1", "new2"], "reordered": []}
    after = pids(daemon)
    # Unchanged: the same processes.
    for name in ("keep", "inner_keep", "inner_change", "mover"):
        assert after[name] == before[name], name
    # Changed: a new process running the new command.
    assert after["change"] != before["change"]
    assert runs(after["change"], 1001)
    assert exited(before["change"])
    # Removed: out of the tree, and no process left.
    assert "gone" not in after
    wait_for(lambda: exited(before["gone"]), what="the removed child's process to be gone")
    # Added: running, in their config position.
    assert children_of(daemon, "root") == ["keep", "new1", "change", "sub", "mover", "new2"]
    for name in ("new1", "new2"):
        assert daemon.node(name)["state"] == "running"
        assert runs(after[name], 1000)
    # Reloading the same file again changes nothing.
    assert daemon.request("reload") == {"removed": [], "updated": [], "restarted": [], "added": [], "reordered": []}
    assert pids(daemon) == after


def test_supervisor_settings_change_in_place(start_daemon) -> None:
    daemon = start_daemon(tree(root="intensity = 0\nperiod = 5"))
    before = all_running(daemon)
    rewrite(daemon, tree(root="intensity = 2\nperiod = 30", sub='strategy = "one_for_all"\nintensity = 9'))
    assert daemon.request("reload") == {"removed": [], "updated": ["root", "sub"], "restarted": [],
        "added": [], "reordered": []}
    assert pids(daemon) == before  # no child restarted
    root = daemon.status()["tree"]
    assert (root["intensity"], root["period"], root["restarts"]) == (2, 30.0, 0)
    assert daemon.node("sub")["intensity"] == 9
    # The new intensity is the one in force: with the old 0, this crash would have ended the daemon.
    os.kill(before["keep"], signal.SIGKILL)
    daemon.wait_running("keep", not_pid=before["keep"])
    assert daemon.status()["tree"]["restarts"] == 1
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


def test_a_nested_childs_change_restarts_only_that_child(daemon: DaemonProcess) -> None:
    before = pids(daemon)
    rewrite(daemon, tree(inner=worker("inner_keep", prefix="supervisor.children.children")
                         + worker("inner_change", 1001, prefix="supervisor.children.children")))
    assert daemon.request("reload")["restarted"] == ["inner_change"]
    after = pids(daemon)
    assert after["inner_change"] != before["inner_change"]
    assert runs(after["inner_change"], 1001)
    # sub is one_for_all, but a reload is not a crash: its sibling keeps running, nothing counts as a restart.
    assert {n: p for n, p in after.items() if n != "inner_change"} == {
        n: p for n, p in before.items() if n != "inner_change"
    }
    assert daemon.node("sub")["restarts"] == 0
    assert daemon.node("inner_change")["restarts"] == 0


def test_a_moved_child_ends_up_under_its_new_parent(daemon: DaemonProcess) -> None:
    before = pids(daemon)
    rewrite(daemon, tree(
        inner=worker("inner_keep", prefix="supervisor.children.children")
        + worker("mover", prefix="supervisor.children.children")
        + worker("inner_change", prefix="supervisor.children.children"),
        after_sub="",
    ))
    summary = daemon.request("reload")
    assert summary == {"removed": ["mover"], "updated": [], "restarted": [], "added": ["mover"], "reordered": []}
    assert children_of(daemon, "root") == ["keep", "change", "gone", "sub"]
    assert children_of(daemon, "sub") == ["inner_keep", "mover", "inner_change"]
    after = pids(daemon)
    assert daemon.node("mover")["state"] == "running"
    assert after["mover"] != before["mover"]
    assert exited(before["mover"])
    assert {n: p for n, p in after.items() if n != "mover"} == {n: p for n, p in before.items() if n != "mover"}


def test_children_attached_at_run_time_survive_a_reload(daemon: DaemonProcess) -> None:
    daemon.request("attach", spec={"name": "extra", "command": ["sleep", "1000"]})
    daemon.request("attach", parent="sub", spec={"name": "inner_extra", "command": ["sleep", "1000"]})
    before = all_running(daemon)
    rewrite(daemon, tree(
        before_sub=worker("keep") + worker("change", 1001),
        inner=worker("inner_keep", prefix="supervisor.children.children")
        + worker("inner_change", 1001, prefix="supervisor.children.children"),
        after_sub=worker("mover") + worker("new"),
    ))
    summary = daemon.request("reload")
    assert summary == {"removed": ["gone"], "updated": [], "restarted": ["change", "inner_change"],
        "added": ["new"], "reordered": []}
    after = all_running(daemon)
    assert after["extra"] == before["extra"]
    assert after["inner_extra"] == before["inner_extra"]
    assert children_of(daemon, "root") == ["keep", "change", "sub", "mover", "new", "extra"]
    assert children_of(daemon, "sub") == ["inner_keep", "inner_change", "inner_extra"]


# ---- invalid configs ----

INVALID = {
    "syntax error": (BASE + "\n[supervisor\n", "supervisor"),
    "unknown key": (BASE.replace('name = "keep"', 'name = "keep"\ncolour = "blue"'), "colour"),
    "duplicate name": (BASE.replace('name = "gone"', 'name = "keep"'), 'duplicate name "keep"'),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_config_is_refused_and_changes_nothing(daemon: DaemonProcess, case: str) -> None:
    text, mention = INVALID[case]
    before = pids(daemon)
    rewrite(daemon, text)
    # Through the verb: an error with its code and the reason.
    with pytest.raises(FoundationError) as err:
        daemon.request("reload")
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert mention in str(err.value)
    assert pids(daemon) == before
    # Through SIGHUP: logged, the tree untouched.
    daemon.kill(signal.SIGHUP)
    wait_for(lambda: daemon.log().count("reload refused, the running tree is unchanged") == 2,
             what="the refused SIGHUP reload in the log")
    assert pids(daemon) == before
    assert all(daemon.node(n)["state"] == "running" for n in before)
    # A refused reload leaves nothing half-done: the next valid one goes through.
    rewrite(daemon, tree(after_sub=worker("mover") + worker("new")))
    assert daemon.request("reload")["added"] == ["new"]


def test_foundationctl_reload(daemon: DaemonProcess) -> None:
    rewrite(daemon, tree(before_sub=worker("keep") + worker("change", 1001), after_sub=worker("mover") + worker("new")))
    done = ctl(daemon, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reloaded: removed gone; restarted change; added new"
    done = ctl(daemon, "reload", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"removed": [], "updated": [], "restarted": [], "added": [], "reordered": []}
    done = ctl(daemon, "reload")
    assert (done.returncode, done.stdout.strip()) == (0, "reloaded: no changes")
    before = pids(daemon)
    rewrite(daemon, BASE.replace('name = "keep"', 'name = "keep"\ncolour = "blue"'))
    done = ctl(daemon, "reload")
    assert done.returncode == 1
    assert done.stderr.startswith("error: invalid_config: ")
    assert "colour" in done.stderr
    assert pids(daemon) == before


# ---- reloads that meet run-time changes ----


def test_a_config_name_held_by_an_attached_child_is_refused(daemon: DaemonProcess) -> None:
    daemon.request("attach", spec={"name": "extra", "command": ["sleep", "1000"]})
    before = all_running(daemon)
    rewrite(daemon, tree(after_sub=worker("mover") + worker("extra", 1001)))
    with pytest.raises(FoundationError) as err:
        daemon.request("reload")
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert "'extra'" in str(err.value)
    # The same through SIGHUP: refused and logged, and the daemon lives on.
    daemon.kill(signal.SIGHUP)
    wait_for(lambda: daemon.log().count("reload refused, the running tree is unchanged") == 2,
             what="the refused SIGHUP reload in the log")
    assert pids(daemon) == before
    # Once the operator detaches the attached one, the config's child takes the name.
    daemon.request("detach", name="extra")
    assert daemon.request("reload")["added"] == ["extra"]
    assert runs(daemon.wait_running("extra"), 1001)


def test_a_changed_child_that_was_detached_at_run_time_is_refused(daemon: DaemonProcess) -> None:
    daemon.request("detach", name="change")
    before = all_running(daemon)
    rewrite(daemon, tree(before_sub=worker("keep") + worker("change", 1001) + worker("gone")))
    with pytest.raises(FoundationError) as err:
        daemon.request("reload")
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert "'change'" in str(err.value)
    assert pids(daemon) == before
    # Taking it out of the config agrees with the running tree: that reload goes through.
    rewrite(daemon, tree(before_sub=worker("keep") + worker("gone")))
    assert daemon.request("reload") == {"removed": ["change"], "updated": [], "restarted": [],
        "added": [], "reordered": []}
    assert pids(daemon) == before


def test_an_operator_detach_finishing_with_a_reload_removal(start_daemon) -> None:
    """Both wait on the same supervisor step; the reload's next phase must not answer the detach twice."""
    once = json.dumps([sys.executable, str(CHILDREN / "exit_after.py"), "0", "0"])
    stubborn = json.dumps([sys.executable, str(CHILDREN / "ignore_term.py")])
    done = f"""
        [[supervisor.children]]
        name = "done"
        restart = "temporary"
        command = {once}
    """
    daemon = start_daemon(done + f"""
        [[supervisor.children]]
        name = "stubborn"
        shutdown = "infinity"
        command = {stubborn}
    """)
    wait_for(lambda: daemon.node("done")["state"] == "stopped", what="the temporary child to finish")
    wait_for(lambda: "stubborn | READY" in daemon.log(), what="stubborn ignoring SIGTERM")
    stubborn_pid = daemon.wait_running("stubborn")
    rewrite(daemon, done + worker("new"))
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda: results.setdefault("reload", daemon.request("reload"))),
        threading.Thread(target=lambda: results.setdefault("detach", daemon.request("detach", name="done"))),
    ]
    threads[0].start()  # stubborn is now stopping, and stays so until we kill it
    wait_for(lambda: daemon.node("stubborn")["state"] == "stopping", what="the removal under way")
    threads[1].start()  # queued behind the removal in root's inbox
    wait_for(lambda: "control: detach" in daemon.log(), what="the detach request received")
    os.kill(stubborn_pid, signal.SIGKILL)  # both removals now complete in one batch
    for thread in threads:
        thread.join(timeout=20)
    assert results["reload"] == {"removed": ["stubborn"], "updated": [], "restarted": [],
        "added": ["new"], "reordered": []}
    assert results["detach"]["name"] == "done"
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
    assert children_of(daemon, "root") == ["new"]
    daemon.wait_running("new")


def test_a_reorder_changes_the_stop_order_and_restarts_nothing(start_daemon) -> None:
    daemon = start_daemon(f"[supervisor]\n{worker('a')}{worker('b')}{worker('c')}")
    before = all_running(daemon)
    rewrite(daemon, f"[supervisor]\n{worker('c')}{worker('a')}{worker('b')}")
    assert daemon.request("reload") == {"removed": [], "updated": [], "restarted": [], "added": [],
                                        "reordered": ["root"]}
    assert pids(daemon) == before
    assert [c["name"] for c in daemon.status()["tree"]["children"]] == ["c", "a", "b"]
    daemon.request("shutdown")
    daemon.wait_exit()
    assert re.findall(r"INFO: stopped (\S+) \(", daemon.log()) == ["b", "a", "c"], "reverse of the new order"
