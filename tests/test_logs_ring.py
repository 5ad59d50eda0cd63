"""LogRings: bounded per-child rings and followers, without a daemon."""

from __future__ import annotations

from daemon.shell.logs import LogRings


def test_tail_keeps_the_last_lines_per_child() -> None:
    rings = LogRings(lines_per_child=3)
    rings.add("a", ["1", "2"])
    rings.add("a", ["3", "4"])
    rings.add("b", ["x"])
    assert [line for _, line in rings.tail("a", 10)] == ["2", "3", "4"]
    assert [line for _, line in rings.tail("a", 2)] == ["3", "4"]
    assert rings.tail("a", 0) == []
    assert [line for _, line in rings.tail("b", 5)] == ["x"]
    assert rings.tail("nobody", 5) == []


def test_followers_get_new_lines_until_they_leave() -> None:
    rings = LogRings()
    got: list[str] = []
    alive = [True]

    def follower(lines: list[str]) -> bool:
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
    rings.follow("a", lambda lines: True)
    rings.forget("a")
    assert rings.tail("a", 5) == []
    assert rings.followers() == 0
