"""LogRings: bounded per-child rings and followers, without a daemon."""

from __future__ import annotations

from daemon.shell.logs import DAEMON, STDERR, STDOUT, LogRings


def test_tail_keeps_the_last_lines_per_child() -> None:
    rings = LogRings(lines_per_child=3)
    rings.add("a", ["1", "2"])
    rings.add("a", ["3", "4"])
    rings.add("b", ["x"])
    assert [line for _, _, line in rings.tail("a", 10)] == ["2", "3", "4"]
    assert [line for _, _, line in rings.tail("a", 2)] == ["3", "4"]
    assert rings.tail("a", 0) == []
    assert [line for _, _, line in rings.tail("b", 5)] == ["x"]
    assert rings.tail("nobody", 5) == []


def test_followers_get_new_lines_until_they_leave() -> None:
    rings = LogRings()
    got: list[str] = []
    alive = [True]

    def follower(stream: str, lines: list[str]) -> bool:
        got.extend(lines)
        return alive[0]

    rings.follow("a", follower)
    rings.add("a", ["1"])
    alive[0] = False
    rings.add("a", ["2"])  # delivered, and the follower says it is gone
    rings.add("a", ["3"])
    assert got == ["1", "2"]
    assert rings.followers() == 0


def test_forget_drops_ring_and_followers() -> None:
    rings = LogRings()
    rings.add("a", ["1"])
    rings.follow("a", lambda stream, lines: True)
    rings.forget("a")
    assert rings.tail("a", 5) == []
    assert rings.followers() == 0


def test_each_line_keeps_its_stream_and_tail_can_keep_only_some() -> None:
    rings = LogRings()
    rings.add("a", ["-- started (pid 1)"], DAEMON)
    rings.add("a", ["out 1", "out 2"], STDOUT)
    rings.add("a", ["err 1"], STDERR)
    rings.add("a", ["out 3"], STDOUT)
    assert [(s, line) for _, s, line in rings.tail("a", 10)] == [
        (DAEMON, "-- started (pid 1)"), (STDOUT, "out 1"), (STDOUT, "out 2"), (STDERR, "err 1"), (STDOUT, "out 3")]
    assert [line for _, _, line in rings.tail("a", 2, (STDOUT,))] == ["out 2", "out 3"]  # the last 2 of stdout
    assert [line for _, _, line in rings.tail("a", 5, (STDERR, DAEMON))] == ["-- started (pid 1)", "err 1"]


def test_an_agents_cause_is_its_last_stderr_line_of_this_run() -> None:
    rings = LogRings()
    rings.add("a", ["foundation-agent: old cause"], STDERR)
    rings.add("a", ["-- exited: status 1"], DAEMON)
    rings.add("a", ["-- started (pid 2)"], DAEMON)
    assert rings.last_starting("a", "foundation-agent: ") is None  # a cause of an earlier run is not this one's
    rings.add("a", ["foundation-agent: no module named 'nosuch'"], STDERR)
    rings.add("a", ["flushed at exit"], STDOUT)  # stdout read after stderr: the cause is still found
    assert rings.last_starting("a", "foundation-agent: ") == "no module named 'nosuch'"
    rings.add("a", ["Traceback ..."], STDERR)
    assert rings.last_starting("a", "foundation-agent: ") is None
