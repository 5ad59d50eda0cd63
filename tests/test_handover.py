"""The in-place upgrade's handover file (daemon/core/handover.py): pure, versioned, round-trips plain data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from daemon.core import handover as ho

pytestmark = pytest.mark.timeout(60)


def sample() -> ho.Handover:
    return ho.Handover(
        generation=3, argv=("python", "-m", "daemon.main", "--config", "x.toml"),
        workers=(ho.HandedWorker("a", 101, 7, ((8, "stdout"), (9, "stderr")), restarts=2),
                 ho.HandedWorker("b", 102, 10, (), restarts=0)),
        supervisors=(ho.HandedSupervisor("root", 2, (10.5, 11.25)),),
        guardian=ho.HandedGuardian(99, 11, 12, (101, 102), ((13, "stdout"),)),
        started_at=12.5,
    )


def to_json(h: ho.Handover) -> str:
    return json.dumps(ho.to_plain(h))


def from_json(text: str) -> ho.Handover:
    return ho.from_plain(json.loads(text))


def test_round_trip_through_json() -> None:
    h = sample()
    assert from_json(to_json(h)) == h


def test_fds_lists_every_descriptor_handed_over() -> None:
    assert sorted(sample().fds()) == [7, 8, 9, 10, 11, 12, 13]


def test_a_newer_format_is_refused_naming_both_versions() -> None:
    data = json.loads(to_json(sample()))
    data["version"] = ho.VERSION + 1
    with pytest.raises(ho.HandoverError, match=rf"version {ho.VERSION + 1} is newer .*version {ho.VERSION}\)"):
        from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["[]", "{}", '{"version": 0}', '{"version": 1}',
                                  '{"version": 1, "generation": 1, "argv": [], "extra": {}, "guardian": null, '
                                  '"supervisors": [], "workers": [{"name": "a", "pid": 1, "pidfd": 3, '
                                  '"pipes": [[4, "stdin"]], "restarts": 0}]}'])
def test_malformed_files_are_refused(text: str) -> None:
    with pytest.raises(ho.HandoverError):
        from_json(text)


def test_a_failed_adoption_is_recorded() -> None:
    h = ho.Handover(1, ("x",), failed="boom")
    assert from_json(to_json(h)).failed == "boom"


@pytest.mark.parametrize(("argv", "expected"), [
    (["py", "-m", "daemon.main"], ["py", "-m", "daemon.main", "--adopt", "F"]),
    (["py", "-m", "daemon.main", "--adopt", "old", "--config", "c"], ["py", "-m", "daemon.main", "--config", "c",
                                                                      "--adopt", "F"]),
    (["py", "--adopt=old"], ["py", "--adopt", "F"]),
])
def test_adopt_argv_replaces_an_earlier_adopt(argv: list[str], expected: list[str]) -> None:
    assert ho.adopt_argv(argv, "F") == expected


BROKER = {"sessions": [{"name": "a", "identity": "6167656e74", "received": 7, "last_seen": 1.5, "busy_until": 0.0}],
          "boxes": {"a": [{"id": "a/3", "seq": 3, "inflight": True},
                          {"id": "a/info-4", "seq": None, "inflight": False, "kind": "info", "sender": None,
                           "body": {"tick": 1}}]},
          "counter": 4, "gaps": [], "monitors": [["a", 2, "b"]],
          "timers": [{"name": "a", "armed": [[1, 20.0, 0.5]], "ticking": [1]}], "counters": {"accepted": 9}}


def test_the_brokers_state_round_trips() -> None:
    h = ho.Handover(2, ("x",), broker=BROKER)
    assert from_json(to_json(h)) == h


def test_a_version_1_file_is_still_read() -> None:
    data = json.loads(to_json(sample()))
    data["version"] = 1
    del data["broker"]
    h = from_json(json.dumps(data))
    assert h.version == 1
    assert h.broker is None
    assert h.workers == sample().workers


def test_a_malformed_broker_state_is_refused() -> None:
    data = json.loads(to_json(ho.Handover(2, ("x",), broker=BROKER)))
    data["broker"] = {"sessions": "nope"}
    with pytest.raises(ho.HandoverError, match="broker state"):
        from_json(json.dumps(data))


def test_foundationd_refuses_to_adopt_a_newer_state_with_a_clear_message(tmp_path) -> None:
    """What an older foundationd does with a newer image's handover (a downgrade): exit at once, naming both
    versions, before it has touched anything."""
    data = json.loads(to_json(sample()))
    data["version"] = ho.VERSION + 1
    path = tmp_path / ho.FILE_NAME
    path.write_text(json.dumps(data))
    out = subprocess.run([sys.executable, "-m", "daemon.main", "--runtime-dir", str(tmp_path / "run"),
                          "--state-dir", str(tmp_path / "state"), "--adopt", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0
    assert (f"cannot adopt {path}: handover state format version {ho.VERSION + 1} is newer than this foundationd "
            f"understands (version {ho.VERSION})") in out.stderr
