"""Per-recipient bookkeeping (daemon/broker/mailbox.py) and the durable outbox under it (daemon/broker/outbox.py)."""

from __future__ import annotations

from pathlib import Path

from daemon.broker.mailbox import Entry, Mailbox
from daemon.broker.outbox import Batch, Outbox


def cast(n: int, name: str = "a") -> Entry:
    return Entry(f"{name}/{n}", n, None, {"n": n})


def call(n: int) -> Entry:
    return Entry(f"a/call-{n}", None, None, {"get": True}, kind="call", caller=object())


def tick(n: int) -> Entry:
    return Entry(f"a/info-{n}", None, None, {"tick": 1}, kind="info")


def ids(entries: list[Entry] | object) -> list[str]:
    return [e.id for e in entries]  # type: ignore[attr-defined]


def test_take_hands_out_entries_in_arrival_order_up_to_the_window() -> None:
    box = Mailbox(bound=100)
    for n in range(1, 8):
        box.push(cast(n))
    assert ids(box.take(3)) == ["a/1", "a/2", "a/3"]
    assert box.take(3) == []  # three outstanding: the window is full
    assert box.done("a/2") is not None
    assert ids(box.take(3)) == ["a/4"]  # one slot freed, one more goes
    assert ids(box.inflight.values()) == ["a/1", "a/3", "a/4"]
    assert ids(box.queue) == ["a/5", "a/6", "a/7"]
    assert len(box) == 6


def test_done_returns_the_entry_once_and_ignores_unknown_ids() -> None:
    box = Mailbox(bound=10)
    box.push(cast(1))
    box.take(10)
    entry = box.done("a/1")
    assert entry is not None
    assert entry.seq == 1
    assert entry.persisted
    assert box.done("a/1") is None  # a second done (a stale incarnation's) changes nothing
    assert box.done("a/99") is None
    assert len(box) == 0


def test_queued_entries_cannot_be_done_before_they_are_taken() -> None:
    box = Mailbox(bound=10)
    box.push(cast(1))
    assert box.done("a/1") is None
    assert ids(box.queue) == ["a/1"]


def test_reset_puts_persisted_in_flight_entries_back_in_front_in_order_and_returns_volatile_ones() -> None:
    box = Mailbox(bound=100)
    for entry in (cast(1), call(1), cast(2), tick(1), cast(3), cast(4), call(2)):
        box.push(entry)
    assert len(box.take(5)) == 5  # cast 1, call 1, cast 2, tick 1, cast 3
    box.done("a/2")  # cast 2 finished before the crash
    lost = box.reset()
    assert ids(lost) == ["a/call-1", "a/info-1"]
    assert not box.inflight
    # Unfinished casts first, oldest first, then what had not been sent yet (volatile entries included).
    assert ids(box.queue) == ["a/1", "a/3", "a/4", "a/call-2"]
    assert ids(box.take(100)) == ["a/1", "a/3", "a/4", "a/call-2"]


def test_reset_twice_and_reset_of_an_idle_mailbox_change_nothing() -> None:
    box = Mailbox(bound=10)
    assert box.reset() == []
    box.push(cast(1))
    box.push(cast(2))
    box.take(1)
    box.reset()
    box.reset()
    assert ids(box.queue) == ["a/1", "a/2"]


def test_the_bound_counts_queued_and_in_flight_entries() -> None:
    box = Mailbox(bound=3)
    assert not box.full
    box.push(cast(1))
    box.push(call(1))
    assert not box.full
    box.take(2)
    box.push(cast(2))
    assert box.full
    assert len(box) == 3
    box.done("a/1")
    assert not box.full
    box.push(cast(3))
    assert box.full


def test_drain_returns_everything_in_flight_first_and_empties_the_box() -> None:
    box = Mailbox(bound=10)
    for n in (1, 2, 3):
        box.push(cast(n))
    box.take(1)
    assert ids(box.drain()) == ["a/1", "a/2", "a/3"]
    assert len(box) == 0
    assert box.take(5) == []


# ---- the outbox ----


def test_outbox_keeps_undone_casts_in_mailbox_order_and_the_next_seq_across_reopen(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "broker")
    batch = Batch()
    for n in range(1, 301):  # past 255 so a byte-order mistake in the key would reorder them
        batch.puts.append(("b", n, {"id": f"b/{n}", "from": None, "body": n}))
    batch.puts.append(("a", 1, {"id": "a/1", "from": "x", "body": "first"}))
    batch.seqs.update({"a": 2, "b": 301})
    batch.chans[("ctl:p", "b")] = [300, 0, "b/300"]
    outbox.commit(batch)
    done = Batch(deletes=[("b", n) for n in range(1, 101)] + [("a", 1)])
    outbox.commit(done)
    outbox.close()

    outbox = Outbox(tmp_path / "broker")
    stored, seqs, chans = outbox.load()
    assert [(s.recipient, s.seq) for s in stored] == [("b", n) for n in range(101, 301)]
    assert stored[0].record == {"id": "b/101", "from": None, "body": 101}
    assert seqs == {"a": 2, "b": 301}  # a's next seq survives although all its messages are done
    assert chans == {("ctl:p", "b"): [300, 0, "b/300"]}
    outbox.close()


def test_outbox_drop_recipient_drops_only_that_name(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "broker")
    batch = Batch()
    for name in ("a", "ab", "b"):
        for n in (1, 2):
            batch.puts.append((name, n, {"id": f"{name}/{n}", "from": None, "body": None}))
    outbox.commit(batch)
    assert outbox.drop_recipient("a") == 2
    assert outbox.drop_recipient("zzz") == 0
    stored, _, _ = outbox.load()
    assert [(s.recipient, s.seq) for s in stored] == [("ab", 1), ("ab", 2), ("b", 1), ("b", 2)]
    assert outbox.drop_recipient("b") == 2  # the last keys of the database
    stored, _, _ = outbox.load()
    assert [s.recipient for s in stored] == ["ab", "ab"]
    outbox.close()


def test_outbox_grows_its_map_when_a_batch_does_not_fit(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "broker", map_size=1 << 20, max_map_size=64 << 20)
    batch = Batch(puts=[("a", n, {"id": f"a/{n}", "from": None, "body": "x" * 4000}) for n in range(1, 1001)])
    outbox.commit(batch)
    stored, _, _ = outbox.load()
    assert len(stored) == 1000
    outbox.close()
