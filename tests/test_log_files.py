"""Children's output in files, rotated by size: the pure decisions (daemon/core/logfiles.py), the writer on real files
with a fake clock (daemon/shell/log_files.py), then real daemons writing them."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SLEEP, ctl, in_log, rewrite

from agents.testing import DaemonProcess, wait_for
from daemon.core.logfiles import LogSettings, LogTarget, must_rotate, rotation, target_of
from daemon.core.spec import WorkerSpec
from daemon.shell.log_files import RETRY, LogFiles
from daemon.shell.logs import DAEMON, STDERR, STDOUT

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "

# ---- the pure part ----


def test_which_file_a_child_writes() -> None:
    logs = LogSettings(directory="/var/log/f", max_size=2048, keep=3, base="/etc/f")
    assert target_of(WorkerSpec("web"), logs) == LogTarget("/var/log/f/web.log", 2048, 3)
    assert target_of(WorkerSpec("web", log_file=False), logs) is None
    assert target_of(WorkerSpec("web", log_file="/tmp/w.log", log_keep=0), logs) == LogTarget("/tmp/w.log", 2048, 0)
    assert target_of(WorkerSpec("web", log_file="web/a.log", log_max_size=4096), logs) == LogTarget(
        "/var/log/f/web/a.log", 4096, 3)
    # Without a log_dir: only a child that names a file has one; a relative one is under the config's directory.
    alone = LogSettings(base="/etc/f")
    assert target_of(WorkerSpec("web"), alone) is None
    assert target_of(WorkerSpec("web", log_file="web.log"), alone) == LogTarget("/etc/f/web.log", 10 << 20, 5)
    assert target_of(WorkerSpec("web", log_file="web.log"), LogSettings(base="/")) == LogTarget("/web.log", 10 << 20, 5)
    # Read as written, before any directory exists: no ".", "..", "//" left for the kernel to trip on.
    odd = WorkerSpec("web", log_file="./a/../../b//web.log")
    assert target_of(odd, logs) == LogTarget("/var/log/b/web.log", 2048, 3)
    assert target_of(WorkerSpec("web", log_file="/../x.log"), logs) == LogTarget("/x.log", 2048, 3)


def test_when_and_how_a_file_rotates() -> None:
    assert not must_rotate(0, 5000, 1024)  # an empty file takes a batch of any size: lines are never split
    assert not must_rotate(1000, 24, 1024)
    assert must_rotate(1000, 25, 1024)
    assert rotation("/l/w.log", 3) == [("/l/w.log.2", "/l/w.log.3"), ("/l/w.log.1", "/l/w.log.2"),
                                       ("/l/w.log", "/l/w.log.1")]
    assert rotation("/l/w.log", 1) == [("/l/w.log", "/l/w.log.1")]
    assert rotation("/l/w.log", 0) == [("/l/w.log", None)]


# ---- the writer, on real files ----


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def texts(content: str) -> list[str]:
    """The lines of a log file without their time stamps (each must have one)."""
    lines = content.splitlines()
    assert all(re.match(STAMP, line) for line in lines), lines
    return [re.sub(STAMP, "", line, count=1) for line in lines]


def test_lines_are_stamped_and_marked_by_stream(tmp_path: Path) -> None:
    writer = LogFiles(LogSettings(directory=str(tmp_path / "logs")))
    writer.started(WorkerSpec("w"))
    writer.write("w", DAEMON, [b"-- started (pid 7)"], 1e9)
    writer.write("w", STDOUT, [b"one", b"two"], 1e9 + 0.25)
    writer.write("w", STDERR, [b"oops"], 1e9 + 0.5)
    writer.write("other", STDOUT, [b"no file for a name never started"], 1e9)
    content = (tmp_path / "logs" / "w.log").read_text()
    assert texts(content) == ["-- started (pid 7)", "one", "two", "! oops"]
    assert ".250" in content.splitlines()[1]
    assert (tmp_path / "logs" / "w.log").stat().st_mode & 0o777 == 0o640 & ~current_umask()
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["w.log"]
    writer.close()
    assert writer.open_count() == 0


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rotation_by_size_keeps_the_newest_files(tmp_path: Path) -> None:
    writer = LogFiles(LogSettings(directory=str(tmp_path), max_size=1024, keep=2))
    writer.started(WorkerSpec("w"))
    for n in range(12):  # each batch ~130 bytes with its stamp: 7 fit in a file
        writer.write("w", STDOUT, [b"%02d " % n + b"x" * 96], 1e9)
    assert sorted(files(tmp_path)) == ["w.log", "w.log.1"]
    assert [int(t[:2]) for t in texts(files(tmp_path)["w.log.1"])] == list(range(7))
    assert [int(t[:2]) for t in texts(files(tmp_path)["w.log"])] == list(range(7, 12))
    for n in range(12, 40):
        writer.write("w", STDOUT, [b"%02d " % n + b"x" * 96], 1e9)
    found = files(tmp_path)
    assert sorted(found) == ["w.log", "w.log.1", "w.log.2"], "keep = 2: the oldest went"
    kept = [int(t[:2]) for name in ("w.log.2", "w.log.1", "w.log") for t in texts(found[name])]
    assert kept == list(range(kept[0], 40)), "in order, nothing lost within what is kept"
    assert all(len(content) <= 1024 for content in found.values())
    writer.write("w", STDOUT, [b"y" * 3000], 1e9)  # more than a file holds: a fresh file takes it whole
    assert texts(files(tmp_path)["w.log"]) == ["y" * 3000]
    writer.close()


def test_keep_zero_starts_the_file_over(tmp_path: Path) -> None:
    writer = LogFiles(LogSettings(directory=str(tmp_path), max_size=1024, keep=0))
    writer.started(WorkerSpec("w"))
    for n in range(10):
        writer.write("w", STDOUT, [b"%d " % n + b"x" * 300], 1e9)
    assert sorted(files(tmp_path)) == ["w.log"]
    assert [t[:1] for t in texts(files(tmp_path)["w.log"])] == ["9"]
    writer.close()


def test_an_existing_file_is_appended_to_and_counted(tmp_path: Path) -> None:
    (tmp_path / "w.log").write_text("x" * 1000 + "\n")
    writer = LogFiles(LogSettings(directory=str(tmp_path), max_size=1024, keep=1))
    writer.started(WorkerSpec("w"))
    writer.write("w", STDOUT, [b"new"], 1e9)  # 1001 + ~34 > 1024: the old content rotates first
    assert files(tmp_path)["w.log.1"] == "x" * 1000 + "\n"
    assert texts(files(tmp_path)["w.log"]) == ["new"]
    writer.close()


def test_a_file_that_fails_loses_lines_says_so_once_and_is_tried_again(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="foundationd")
    clock = Clock()
    fifo = tmp_path / "w.log"
    os.mkfifo(fifo)  # nobody reads it: opened as a file, writes would block the daemon's loop
    writer = LogFiles(LogSettings(directory=str(tmp_path)), clock=clock)
    writer.started(WorkerSpec("w"))
    for _ in range(3):
        writer.write("w", STDOUT, [b"lost"], 1e9)
    warnings = [r.getMessage() for r in caplog.records if "cannot write log file" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"w: cannot write log file {fifo}" in warnings[0]
    assert writer.open_count() == 0
    fifo.unlink()
    writer.write("w", STDOUT, [b"still lost"], 1e9)  # not yet tried again
    assert not fifo.exists()
    clock.now += RETRY
    writer.write("w", STDOUT, [b"kept"], 1e9)
    note, *kept = texts(fifo.read_text())
    assert re.fullmatch(r"-- \d+ bytes of output lost", note)
    assert kept == ["kept"]
    assert any("is written again" in r.getMessage() for r in caplog.records)
    writer.close()


def test_only_a_regular_file_is_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = tmp_path / "w.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # with a reader, a FIFO opens, and would fill up
    try:
        writer = LogFiles(LogSettings(directory=str(tmp_path)))
        writer.started(WorkerSpec("w"))
        writer.write("w", STDOUT, [b"x"], 1e9)
        assert writer.open_count() == 0
        assert os.read(reader, 100) == b""
        assert any("not a regular file" in r.getMessage() for r in caplog.records)
    finally:
        os.close(reader)


def test_a_new_target_closes_the_old_file_and_forget_closes_it(tmp_path: Path) -> None:
    writer = LogFiles(LogSettings(directory=str(tmp_path / "a")))
    writer.started(WorkerSpec("w"))
    writer.started(WorkerSpec("v", log_file=False))
    writer.write("w", STDOUT, [b"in a"], 1e9)
    writer.write("v", STDOUT, [b"nowhere"], 1e9)
    assert writer.open_count() == 1
    writer.started(WorkerSpec("w"))  # a restart with the same target keeps the file open
    assert writer.open_count() == 1
    writer.configure(LogSettings(directory=str(tmp_path / "b")))  # a reload moved log_dir
    assert writer.open_count() == 0
    writer.write("w", STDOUT, [b"in b"], 1e9)
    assert texts((tmp_path / "b" / "w.log").read_text()) == ["in b"]
    assert texts((tmp_path / "a" / "w.log").read_text()) == ["in a"]
    writer.forget("w")
    assert writer.open_count() == 0
    writer.write("w", STDOUT, [b"gone"], 1e9)
    assert texts((tmp_path / "b" / "w.log").read_text()) == ["in b"]


# ---- real daemons ----


def test_a_childs_output_goes_to_its_file_with_markers_and_streams(start_daemon, tmp_path: Path) -> None:
    d: DaemonProcess = start_daemon(f"""
        [daemon]
        log_dir = "logs"
        [[supervisor.children]]
        name = "talker"
        command = ["sh", "-c", "echo to out; echo to err >&2; exec sleep 1000"]
        [[supervisor.children]]
        name = "own"
        command = ["sh", "-c", "echo mine; exec sleep 1000"]
        log_file = "{tmp_path}/elsewhere/own.log"
        [[supervisor.children]]
        name = "none"
        command = ["sh", "-c", "echo not in a file; exec sleep 1000"]
        log_file = false
    """)
    logs = tmp_path / "logs"  # relative to the config file's directory
    pid = d.wait_running("talker")
    wait_for(lambda: (logs / "talker.log").exists() and len((logs / "talker.log").read_text().splitlines()) == 3,
             what="talker's three lines in its file")
    lines = texts((logs / "talker.log").read_text())
    assert lines[0] == f"-- started (pid {pid})"
    assert sorted(lines[1:]) == ["! to err", "to out"]  # the two pipes are read in either order
    own = tmp_path / "elsewhere" / "own.log"
    wait_for(lambda: own.exists() and "mine" in texts(own.read_text()), what="own's line in its file")
    wait_for(lambda: "none | not in a file" in d.log(), what="none's line on foundationd's stdout")
    assert sorted(p.name for p in logs.iterdir()) == ["talker.log"]
    d.request("restart", name="talker")
    wait_for(lambda: any(t.startswith("-- exited: ") for t in texts((logs / "talker.log").read_text())),
             what="the exit marker in the file")


CHATTY = "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo \"$i $(printf '%096d' 0)\"; sleep 0.01; done; exec sleep 1000"


def test_files_rotate_under_a_running_daemon_and_close_when_the_child_goes(start_daemon, tmp_path: Path) -> None:
    d: DaemonProcess = start_daemon(f"""
        [daemon]
        log_dir = "{tmp_path}/logs"
        log_max_size = "1K"
        log_keep = 2
        [[supervisor.children]]
        name = "chatty"
        command = ["sh", "-c", {json.dumps(CHATTY)}]
        [[supervisor.children]]
        name = "idle"
        command = {SLEEP}
    """)
    logs = tmp_path / "logs"
    current = logs / "chatty.log"
    wait_for(lambda: current.exists() and texts(current.read_text())[-1:] == [f"40 {0:096d}"], timeout=20,
             what="chatty's 40th line in its current file")
    assert sorted(p.name for p in logs.iterdir()) == ["chatty.log", "chatty.log.1", "chatty.log.2", "idle.log"]
    kept = [t for name in ("chatty.log.2", "chatty.log.1", "chatty.log") for t in texts((logs / name).read_text())]
    numbers = [int(t.split()[0]) for t in kept if not t.startswith("--")]
    assert numbers == list(range(numbers[0], 41)), "in order, nothing lost within what is kept"
    assert d.proc is not None
    held = lambda: sorted(t for t in fd_targets(d.proc.pid) if t.startswith(str(logs)))  # noqa: E731
    assert held() == [str(current), str(logs / "idle.log")]  # (idle's has its start marker)
    assert ctl(d, "detach", "chatty").returncode == 0
    wait_for(lambda: held() == [str(logs / "idle.log")], what="chatty's file closed once it left the tree")


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except FileNotFoundError:
            continue
    return targets


def test_a_reload_moves_the_files_and_a_bad_file_does_not_stop_the_daemon(start_daemon, tmp_path: Path) -> None:
    config = """
        [daemon]
        log_dir = "{dir}"
        [[supervisor.children]]
        name = "beat"
        command = ["sh", "-c", "trap 'echo beat' HUP; while :; do sleep 1 & wait; done"]
    """
    d: DaemonProcess = start_daemon(config.format(dir=tmp_path / "a"))
    d.wait_running("beat")

    def beat_into(path: Path) -> None:
        def beaten() -> bool:
            assert ctl(d, "signal", "beat", "HUP").returncode == 0
            return path.exists() and "beat" in texts(path.read_text())
        wait_for(beaten, interval=0.2, what=f"a beat in {path}")

    beat_into(tmp_path / "a" / "beat.log")
    os.mkfifo(tmp_path / "b.fifo")
    (tmp_path / "b").mkdir()
    os.symlink(tmp_path / "b.fifo", tmp_path / "b" / "beat.log")  # a FIFO, not a file: refused, never blocks
    rewrite(d, config.format(dir=tmp_path / "b"))
    assert ctl(d, "reload").returncode == 0
    assert d.proc is not None
    wait_for(lambda: not any(t.startswith(str(tmp_path / "a")) for t in fd_targets(d.proc.pid)),
             what="the old file closed at the reload")
    assert ctl(d, "signal", "beat", "HUP").returncode == 0
    in_log(d, f"beat: cannot write log file {tmp_path / 'b' / 'beat.log'}: ")  # (ENXIO: nobody reads the FIFO)
    assert ctl(d, "status").returncode == 0
    assert d.status()["tree"]["children"][0]["state"] == "running"
    os.unlink(tmp_path / "b" / "beat.log")
    beat_into(tmp_path / "b" / "beat.log")  # tried again (every 5 s) once the FIFO is gone
    in_log(d, f"beat: log file {tmp_path / 'b' / 'beat.log'} is written again")


def test_foundationd_check_and_start_refuse_a_bad_log_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[daemon]\nlog_keep = 1000\n[[supervisor.children]]\nname = "a"\ncommand = ["true"]\n')
    done = subprocess.run([sys.executable, "-m", "daemon.main", "--check", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"foundationd: invalid config: {config}: daemon.log_keep: must be between 0 and 100, got 1000"]


def test_attach_takes_the_log_keys(start_daemon, tmp_path: Path) -> None:
    d: DaemonProcess = start_daemon(f'[daemon]\nlog_dir = "{tmp_path}/logs"\n')
    out = ctl(d, "attach", "late", "--set", "log_file='late/out.log'", "--", "sh", "-c", "echo hi; exec sleep 1000")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "logs" / "late" / "out.log"
    wait_for(lambda: path.exists() and "hi" in texts(path.read_text()), what="the attached child's file")
