"""agents.state.StateStore against real LMDB files: round trips, errors, map growth, stale readers, SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import pytest

from agents.state import StateError, StateStore, agent_state_path
from agents.testing import wait_for
from ipc.state_store import SharedStateStore, open_agent_store, shared_store_path

PY = sys.executable
WRITER = str(Path(__file__).parent / "children" / "state_writer.py")
PAD = "x" * 1000


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return agent_state_path(tmp_path, "counter")


@contextmanager
def child(mode: str, store_path: Path, ready: bytes) -> Iterator[subprocess.Popen[bytes]]:
    """tests/children/state_writer.py MODE PATH, started and waited for until it printed ``ready``."""
    with subprocess.Popen([PY, WRITER, mode, str(store_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == ready, f"{mode} child said {line!r}: {proc.stderr.read() if proc.stderr else b''!r}"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


# ---- round trips ----


def test_fresh_store_loads_none_and_zero(path: Path) -> None:
    with StateStore(path) as store:
        assert store.load() == (None, 0)
    assert sorted(os.listdir(path)) == ["data.mdb", "lock.mdb"]
    assert (path / "data.mdb").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "state",
    [
        {"count": 0},
        {"nested": {"list": [1, 2.5, "três", None, True, False], "empty": {}}, "big": 2**63 - 1, "neg": -(2**63)},
        [1, 2, 3],
        "just a string",
        0,
        False,
    ],
)
def test_commit_then_reopen_returns_the_same_state_and_seq(path: Path, state: object) -> None:
    with StateStore(path) as store:
        store.commit(state, 41)
        assert store.load() == (state, 41)
    with StateStore(path) as reopened:
        assert reopened.load() == (state, 41)


def test_many_commits_keep_the_last(path: Path) -> None:
    with StateStore(path) as store:
        for seq in range(1, 301):
            store.commit({"count": seq, "pad": PAD}, seq)
    with StateStore(path) as store:
        assert store.load() == ({"count": 300, "pad": PAD}, 300)


def test_last_seq_uses_the_full_unsigned_64_bit_range(path: Path) -> None:
    with StateStore(path) as store:
        store.commit({"a": 1}, 2**64 - 1)
    with StateStore(path) as store:
        assert store.load() == ({"a": 1}, 2**64 - 1)


# ---- refused values leave the old state ----


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"tags": {"a", "b"}}, "set"),
        ({"when": object()}, "object"),
        ({"raw": b"bytes"}, "bytes"),
        ({1: "int key"}, "str"),  # orjson: "Dict key must be str"
        ({"huge": 2**64}, "64-bit"),  # orjson: "Integer exceeds 64-bit range"
    ],
)
def test_non_serialisable_state_raises_and_leaves_the_old_state(path: Path, state: object, named: str) -> None:
    with StateStore(path) as store:
        store.commit({"count": 1}, 7)
        with pytest.raises(StateError, match="not JSON-serialisable") as info:
            store.commit(state, 8)
        assert info.value.code == "not_serialisable"
        assert named in str(info.value)
        assert isinstance(info.value.__cause__, TypeError)
        assert store.load() == ({"count": 1}, 7)
    with StateStore(path) as store:
        assert store.load() == ({"count": 1}, 7)


@pytest.mark.parametrize(("state", "seq"), [(None, 1), ({"a": 1}, -1), ({"a": 1}, 2**64), ({"a": 1}, True),
                                            ({"a": 1}, 1.0)])
def test_none_state_and_bad_seq_are_refused(path: Path, state: object, seq: object) -> None:
    with StateStore(path) as store:
        store.commit({"count": 1}, 7)
        with pytest.raises(StateError) as info:
            store.commit(state, seq)  # type: ignore[arg-type]
        assert info.value.code == "invalid"
        assert store.load() == ({"count": 1}, 7)


# ---- map growth ----


def test_a_tiny_map_grows_to_hold_a_state_of_a_few_megabytes(path: Path) -> None:
    big = {"blob": "y" * (3 << 20), "n": 1}
    with StateStore(path, map_size=64 << 10, max_map_size=256 << 20) as store:
        assert store.map_size == 64 << 10
        store.commit({"n": 0}, 1)
        store.commit(big, 2)
        assert store.map_size > 6 << 20
        assert store.load() == (big, 2)
    # Reopening with the same tiny map_size: LMDB raises the map to the data in use; commits grow it again.
    with StateStore(path, map_size=64 << 10, max_map_size=256 << 20) as store:
        assert store.load() == (big, 2)
        bigger = {"blob": "z" * (5 << 20), "n": 2}
        store.commit(bigger, 3)
        assert store.load() == (bigger, 3)


def test_a_state_beyond_max_map_size_raises_and_the_old_state_survives(path: Path) -> None:
    with StateStore(path, map_size=64 << 10, max_map_size=256 << 10) as store:
        store.commit({"count": 5}, 5)
        with pytest.raises(StateError, match=r"state of \d+ bytes does not fit") as info:
            store.commit({"blob": "y" * (3 << 20)}, 6)
        assert info.value.code == "map_full"
        assert isinstance(info.value.__cause__, lmdb.MapFullError)
        assert store.map_size == 256 << 10  # grew to the cap, then gave up
        assert store.load() == ({"count": 5}, 5)
        store.commit({"count": 6}, 6)  # still usable for states that fit
    with StateStore(path, map_size=64 << 10, max_map_size=256 << 10) as store:
        assert store.load() == ({"count": 6}, 6)


# ---- corrupt or foreign contents ----


@pytest.mark.parametrize(
    ("records", "code"),
    [
        ({b"state": b"{not json", b"last_seq": (3).to_bytes(8, "big")}, "corrupt"),
        ({b"state": b"{}", b"last_seq": b"\x03"}, "corrupt"),
        ({b"state": b"{}"}, "corrupt"),
        ({b"last_seq": (3).to_bytes(8, "big")}, "corrupt"),
        ({b"state": b"{}", b"last_seq": (3).to_bytes(8, "big"), b"format": b"2"}, "format"),
    ],
)
def test_corrupt_or_newer_contents_raise_state_error(path: Path, records: dict[bytes, bytes], code: str) -> None:
    StateStore(path).close()
    with lmdb.open(str(path), subdir=True) as env, env.begin(write=True) as txn:
        for key, value in records.items():
            txn.put(key, value)
    with StateStore(path) as store:
        with pytest.raises(StateError) as info:
            store.load()
        assert info.value.code == code
        assert str(path) in str(info.value)


# ---- lifecycle and process rules ----


def test_close_is_idempotent_and_a_closed_store_raises(path: Path) -> None:
    store = StateStore(path)
    store.commit({"a": 1}, 1)
    store.close()
    store.close()
    for use in (store.load, lambda: store.commit({"a": 2}, 2), lambda: store.map_size):
        with pytest.raises(StateError, match="closed") as info:
            use()
        assert info.value.code == "closed"
    with StateStore(path) as store2:
        pass
    with pytest.raises(StateError, match="closed"):
        store2.load()
    assert "closed" in repr(store2)


def test_a_second_open_in_the_same_process_is_refused(path: Path) -> None:
    with StateStore(path) as store:
        with pytest.raises(StateError, match="already open") as info:
            StateStore(path)
        assert info.value.code == "lmdb"
        store.commit({"a": 1}, 1)  # the refused open did not disturb the first one's locks
        assert store.load() == ({"a": 1}, 1)


@pytest.mark.filterwarnings("ignore:This process:DeprecationWarning")  # fork() in a threaded pytest (3.12+)
def test_a_store_that_crossed_a_fork_refuses_and_close_there_leaves_the_parent_alone(path: Path) -> None:
    with StateStore(path) as store:
        store.commit({"a": 1}, 1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            status = 1
            try:
                store.load()
            except StateError as exc:
                status = 0 if exc.code == "wrong_process" else 2
            except BaseException:
                status = 3
            store.close()  # must only drop the handle: mdb_env_close here would clear the parent's readers
            os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        store.commit({"a": 2}, 2)
        assert store.load() == ({"a": 2}, 2)


def test_agent_state_path_refuses_names_that_escape(tmp_path: Path) -> None:
    assert agent_state_path(tmp_path, "counter") == tmp_path / "agents" / "counter"
    for bad in ["", ".", "..", "a/b", "../x", "a\0b"]:
        with pytest.raises(ValueError, match="directory name"):
            agent_state_path(tmp_path, bad)


# ---- crashed processes ----


def test_reader_check_clears_the_slot_of_a_reader_killed_mid_transaction(path: Path) -> None:
    with StateStore(path) as store:
        store.commit({"count": 1}, 1)
    # Another process keeps the environment open, so LMDB does not reset the reader table on the next open
    # (it does when the opener is alone): the killed reader's slot survives and reader_check() has to clear it.
    with child("hold-open", path, b"open\n") as holder:
        with child("hold-reader", path, b"reading\n") as reader:
            reader_pid = reader.pid
            reader.send_signal(signal.SIGKILL)
            reader.wait()
        with StateStore(path) as store:
            assert store.stale_readers_cleared == 1
            assert store._env is not None
            assert str(reader_pid) not in store._env.readers()  # "(no active readers)" or only live pids
            assert store.load() == ({"count": 1}, 1)
            for seq in range(2, 12):
                store.commit({"count": seq}, seq)
            assert store.load() == ({"count": 11}, 11)
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0


def test_a_reader_killed_while_alone_does_not_block_the_next_incarnation(path: Path) -> None:
    with StateStore(path) as store:
        store.commit({"count": 1}, 1)
    with child("hold-reader", path, b"reading\n") as reader:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    with StateStore(path) as store:
        assert store.load() == ({"count": 1}, 1)
        store.commit({"count": 2}, 2)
        assert store.load() == ({"count": 2}, 2)


@pytest.mark.slow
def test_sigkill_mid_write_leaves_the_last_committed_state(path: Path) -> None:
    """A writer commits in a tight loop (nearly all of its time inside commit: puts, pwrite, two fdatasyncs) and
    is SIGKILLed after a random number of commits at a random poll moment, 200 times on one store. Each time the
    store must hold a whole state, n == last_seq, at least every commit the writer reported as returned, at most
    the one in flight beyond it, and n never goes backwards."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    last = 0
    in_flight_kept = 0  # kills after the in-flight commit's meta page was written (during its last fdatasync, or
    # before the report): that commit is kept, as it should be — it proves kills land inside commit()
    for iteration in range(200):
        where = f"seed {seed}, iteration {iteration}"
        target = rng.randint(1, 6)
        with subprocess.Popen([PY, WRITER, "commit-loop", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            os.set_blocking(fd, False)
            out = bytearray()

            def reported(proc: subprocess.Popen[bytes] = proc, fd: int = fd, out: bytearray = out,
                         target: int = target) -> bool:
                try:
                    out.extend(os.read(fd, 65536))
                except BlockingIOError:
                    pass
                return proc.poll() is not None or out.count(b"\n") >= target

            wait_for(reported, timeout=10, interval=rng.uniform(0.0001, 0.002), what=f"writer commits ({where})")
            proc.send_signal(signal.SIGKILL)
            os.set_blocking(fd, True)
            rest, err = proc.communicate(timeout=10)
            assert proc.returncode == -signal.SIGKILL, f"writer exited {proc.returncode}: {err!r} ({where})"
        reports = [int(line) for line in (bytes(out) + rest).split()]
        assert reports, where
        assert reports == list(range(reports[0], reports[-1] + 1)), where
        assert reports[0] == last + 1, f"the writer resumed from {reports[0] - 1}, not {last} ({where})"
        with StateStore(path) as store:
            state, seq = store.load()
        assert state == {"n": seq, "pad": PAD}, where
        assert reports[-1] <= seq <= reports[-1] + 1, f"reported {reports[-1]}, stored {seq} ({where})"
        assert seq >= last, where
        in_flight_kept += seq == reports[-1] + 1
        last = seq
    print(f"seed {seed}: final n {last}; {in_flight_kept}/200 kills kept an unreported in-flight commit")


def test_shared_store_keeps_each_agents_state_apart_in_one_environment(tmp_path: Path) -> None:
    assert shared_store_path(tmp_path, "counter") is None
    assert shared_store_path(tmp_path, "workflow-a") == tmp_path / "workflows"
    with open_agent_store(tmp_path, "workflow-a") as a:
        assert isinstance(a, SharedStateStore)
        assert a.load() == (None, 0)
        a.commit({"n": 1}, 3)
        a.commit({"n": 2}, 4)
    with open_agent_store(tmp_path, "workflow-b") as b:
        b.commit({"n": 9}, 1)
        assert b.load() == ({"n": 9}, 1)
    with SharedStateStore(tmp_path / "workflows") as inspector:
        assert sorted(inspector.names()) == ["workflow-a", "workflow-b"]
        assert inspector.load_of("workflow-a") == ({"n": 2}, 4)
        inspector.delete_of("workflow-b")
        assert inspector.names() == ["workflow-a"]
        assert inspector.load_of("workflow-b") == (None, 0)
        with pytest.raises(ValueError, match="cannot be a key"):
            inspector.load_of("")
    assert not (tmp_path / "agents").exists()
