"""Issue 11, defect 8: a repeated ``send - --producer`` must not print ids for lines an earlier run got in.

The daemon answers a resend of an accepted (producer, seq) with ``"duplicate": true``; ``foundationctl send -``
prints the ids of what this run queued and sums up the skipped lines in one note on stderr, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agents.testing import DaemonProcess, wait_for
from daemon.control.verbs.send import _ranges

FOUNDATIONCTL = str(Path(sys.executable).with_name("foundationctl"))
COUNTER = """
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""


def ctl(daemon: DaemonProcess, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FOUNDATION_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    return subprocess.run([FOUNDATIONCTL, "--runtime-dir", str(daemon.runtime_dir), *args], input=stdin,
                          capture_output=True, text=True, timeout=30, check=False, env=env)


def count(daemon: DaemonProcess) -> Any:
    return daemon.request("call", name="counter", body={"get": True}, timeout=10)["reply"]["count"]


def adds(*values: int) -> str:
    return "".join(f'{{"add": {v}}}\n' for v in values)


def test_a_rerun_prints_only_the_new_ids_and_notes_the_lines_already_accepted(start_daemon) -> None:
    daemon = start_daemon(COUNTER)
    daemon.wait_running("counter")
    first = ctl(daemon, "send", "counter", "-", "--producer", "import-7", stdin=adds(1, 2, 4))
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["counter/1", "counter/2", "counter/3"]
    assert first.stderr == ""
    # The same input, grown by two lines (an import that failed after line 3, run again).
    again = ctl(daemon, "send", "counter", "-", "--producer", "import-7", stdin=adds(1, 2, 4, 8, 16))
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["counter/4", "counter/5"]
    assert again.stderr == ("note: 3 line(s) already accepted under producer 'import-7', not queued again: "
                            "lines 1-3\n")
    assert wait_for(lambda: count(daemon) == 31, what="every add, once")
    # Nothing new at all: no ids, the note, still success.
    same = ctl(daemon, "send", "counter", "-", "--producer", "import-7", stdin=adds(1, 2, 4, 8, 16))
    assert same.returncode == 0, same.stderr
    assert same.stdout == ""
    assert "note: 5 line(s) already accepted under producer 'import-7'" in same.stderr
    assert count(daemon) == 31


def test_the_reply_to_a_duplicate_says_so(start_daemon) -> None:
    daemon = start_daemon(COUNTER)
    daemon.wait_running("counter")
    with daemon.client() as client:
        new = [client.request("send", name="counter", body={"add": n}, producer="p", seq=n) for n in (1, 2)]
        assert new == [{"id": "counter/1"}, {"id": "counter/2"}]  # a first send is not marked
        # The producer's last accepted number: its first id; an older one: only that it was a duplicate.
        assert client.request("send", name="counter", body={"add": 2}, producer="p", seq=2) == \
            {"id": "counter/2", "duplicate": True}
        assert client.request("send", name="counter", body={"add": 1}, producer="p", seq=1) == \
            {"id": "duplicate", "duplicate": True}
        assert client.request("send", name="counter", body={"add": 1}) == {"id": "counter/3"}  # no producer: new
    assert wait_for(lambda: count(daemon) == 4, what="three adds, once each")


def test_skipped_lines_are_named_as_ranges() -> None:
    assert _ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert _ranges([4]) == "4"
