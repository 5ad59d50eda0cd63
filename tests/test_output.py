"""The daemon's output never blocks its loop: a reader that stops reading loses output, not the daemon."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

from agents.testing import wait_for
from daemon.shell.loop import EventLoop
from daemon.shell.output import CHUNK, OutputSink
from ipc.control import ControlClient


def _unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_sink_buffers_within_its_bound_then_drops_and_reports(tmp_path: Path) -> None:
    r, w = os.pipe()
    loop = EventLoop()
    sink = OutputSink(w, limit=64 * 1024)
    sink.attach(loop.add_writer, loop.remove_writer)
    try:
        payload = b"y" * CHUNK
        for _ in range(1000):  # ~4 MB into a 64 KiB pipe nobody reads: none of this may block
            sink.write(payload)
        assert sink.dropped > 0
        os.set_blocking(r, False)
        received = bytearray()
        while b"bytes dropped" not in received:  # the reader catches up; the loop flushes and reports the loss
            try:
                received += os.read(r, 1 << 16)
            except BlockingIOError:
                loop.run_once()
        assert sink.dropped == 0
    finally:
        sink.detach()
        loop.close()
        os.close(r)
        os.close(w)


def test_a_stalled_stdout_reader_does_not_freeze_the_daemon(tmp_path: Path) -> None:
    config = tmp_path / "chatty.toml"
    config.write_text(textwrap.dedent(f"""
        [[supervisor.children]]
        name = "chatty"
        command = ["{sys.executable}", "-c", "while True: print('x' * 200, flush=True)"]
    """))
    r, w = os.pipe()  # the daemon's stdout and stderr: never read until the end
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.main", "--config", str(config), "--runtime-dir", str(run),
         "--state-dir", str(tmp_path / "state")],
        stdout=w, stderr=w, env={**os.environ, "FOUNDATION_RUNTIME_DIR": str(run)},
    )
    os.close(w)
    try:
        def answers() -> bool:
            with ControlClient(str(run / "control.sock"), timeout=5) as client:
                node = client.request("status")["tree"]["children"][0]
                return node["state"] == "running" and node["pid"] is not None

        wait_for(answers, timeout=15, what="the daemon answers while its stdout is full")
        # Wait until the pipe is loaded past half its 64 KiB (its page slots fill before its bytes do: the level
        # where writes stop varies), then insist the daemon still answers.
        wait_for(lambda: _unread(r) >= 32_768, timeout=15, what="the daemon's stdout pipe fills up")
        with ControlClient(str(run / "control.sock"), timeout=5) as client:
            for _ in range(50):
                client.request("status")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(r)
