"""The broker's pure admission part (daemon/broker/admission.py): admission to a mailbox, dedup by (sender, chan),
a gapless producer's gap, staging for the group commit and the undo of a failed commit. No processes, no sockets,
no LMDB: plain values in, decisions out."""

from __future__ import annotations

from typing import Any

from daemon.broker.admission import Accepted, Admission, Duplicate, Receipt, Recipient, Refused, Turn
from ipc import wire
from ipc.errors import ErrorCode, FoundationError

ROOM = Recipient(known=True, queued=0, bound=100)
PRODUCER = "ctl:batch-7"


class Answers:
    """Collects (result, error) answers, like the broker's responders."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, FoundationError | None]] = []

    def __call__(self, result: Any, err: FoundationError | None) -> None:
        self.got.append((result, err))


def send(adm: Admission, seq: int, body: Any = None, *, recipient: Recipient = ROOM, gapless: bool = True,
         answers: Answers | None = None) -> Accepted | Duplicate | Refused:
    """A producer's numbered send, as ``Broker.send`` makes it."""
    return adm.cast(PRODUCER, "counter", body if body is not None else {"add": seq}, [seq, 0], recipient,
                    respond=answers or Answers(), gapless=gapless)


def refused_code(decision: object) -> ErrorCode:
    assert isinstance(decision, Refused), decision
    return decision.error.code


def answer_turn(turn: Turn) -> None:
    """What the broker does after a successful commit: accept staged casts, then answer duplicates."""
    for item in turn.staged:
        if item.respond is not None:
            item.respond(Receipt(item.entry.id), None)
    for respond, duplicate in turn.duplicates:
        respond(duplicate.receipt, None)


# ---- admission ----


def test_a_cast_to_a_known_recipient_with_room_is_staged_with_the_next_seq() -> None:
    adm = Admission(seqs={"counter": 41})
    decision = adm.cast(None, "counter", {"add": 1}, None, ROOM, respond=Answers())
    assert isinstance(decision, Accepted)
    entry = decision.staged.entry
    assert (entry.id, entry.seq, entry.sender, entry.body) == ("counter/41", 41, None, {"add": 1})
    assert adm.next_seq["counter"] == 42
    turn = adm.end_turn()
    assert turn.batch.puts == [("counter", 41, {"id": "counter/41", "from": None, "body": {"add": 1}})]
    assert turn.batch.seqs == {"counter": 42}
    assert turn.batch.chans == {}  # an anonymous cast leaves no channel mark
    assert [s.entry.id for s in turn.staged] == ["counter/41"]
    assert not adm  # the next turn starts empty


def test_an_unknown_recipient_is_refused_and_nothing_is_staged() -> None:
    adm = Admission()
    decision = adm.cast(None, "ghost", 1, None, Recipient(known=False), respond=Answers())
    assert refused_code(decision) is ErrorCode.NO_SUCH_AGENT
    assert "ghost" in decision.error.message  # type: ignore[union-attr]
    assert refused_code(adm.call(None, "ghost", 1, Answers(), Recipient(known=False))) is ErrorCode.NO_SUCH_AGENT
    assert not adm
    assert adm.next_seq == {}


def test_a_full_mailbox_counts_what_is_staged_this_turn() -> None:
    adm = Admission()
    box = Recipient(known=True, queued=1, bound=3)
    assert isinstance(adm.cast(None, "counter", 1, None, box, respond=Answers()), Accepted)
    assert isinstance(adm.call(None, "counter", 2, Answers(), box), Accepted)  # calls take room too
    full = adm.cast(None, "counter", 3, None, box, respond=Answers())
    assert refused_code(full) is ErrorCode.MAILBOX_FULL
    assert "(3 messages)" in full.error.message  # type: ignore[union-attr]
    adm.end_turn()  # committed: the broker pushed both, so the mailbox now holds 3
    assert refused_code(adm.cast(None, "counter", 3, None, Recipient(True, 3, 3), respond=Answers())) \
        is ErrorCode.MAILBOX_FULL
    assert isinstance(adm.cast(None, "counter", 3, None, Recipient(True, 2, 3), respond=Answers()), Accepted)


def test_an_oversized_message_is_refused_as_too_large_before_it_takes_a_seq() -> None:
    adm = Admission()
    big = "x" * wire.MAX_MESSAGE
    assert refused_code(adm.cast(None, "counter", big, None, ROOM, respond=Answers())) is ErrorCode.TOO_LARGE
    assert refused_code(adm.call(None, "counter", big, Answers(), ROOM)) is ErrorCode.TOO_LARGE
    assert adm.next_seq == {}
    assert not adm
    decision = adm.cast(None, "counter", "small", None, ROOM, respond=Answers())
    assert isinstance(decision, Accepted)
    assert decision.staged.entry.seq == 1  # the refused one used no number


def test_infos_are_staged_without_admission_and_never_persisted() -> None:
    adm = Admission()
    staged = adm.info("counter", {"tick": 3})
    assert (staged.entry.kind, staged.entry.persisted, staged.respond) == ("info", False, None)
    call = adm.call(None, "counter", {"get": True}, Answers(), ROOM)
    assert isinstance(call, Accepted)
    assert call.staged.entry.id == "counter/call-2"  # calls and infos share one numbering
    turn = adm.end_turn()
    assert not turn.batch  # nothing for the disk
    assert [s.entry.kind for s in turn.staged] == ["info", "call"]


def test_done_of_a_persisted_entry_is_deleted_in_the_next_commit_and_volatile_ones_are_not() -> None:
    adm = Admission()
    cast = adm.cast(None, "counter", 1, None, ROOM, respond=Answers())
    assert isinstance(cast, Accepted)
    adm.end_turn()
    assert adm.done("counter", cast.staged.entry)
    assert not adm.done("counter", adm.info("counter", {"tick": 1}).entry)
    assert adm.deletes_pending == 1
    assert adm.end_turn(deletes=True).batch.deletes == [("counter", 1)]
    assert not adm
    assert adm.deletes_pending == 0


def test_deletes_wait_for_a_commit_that_happens_anyway() -> None:
    """A deletion needs no fsync of its own (the recipient committed the seq before done): it rides with the next
    accepted message's commit, and a turn with nothing durable to write commits nothing."""
    adm = Admission()
    first = adm.cast(None, "counter", 1, None, ROOM, respond=Answers())
    assert isinstance(first, Accepted)
    adm.end_turn()
    adm.done("counter", first.staged.entry)
    adm.info("counter", {"tick": 1})
    idle = adm.end_turn()
    assert not idle.batch  # only an info: no commit, the deletion waits
    assert adm.deletes_pending == 1
    adm.cast(None, "counter", 2, None, ROOM, respond=Answers())
    turn = adm.end_turn()
    assert turn.batch.deletes == [("counter", 1)]
    assert [p[1] for p in turn.batch.puts] == [2]
    assert adm.deletes_pending == 0


def test_recovered_entries_keep_their_ids_and_later_casts_number_after_them() -> None:
    adm = Admission(seqs={"counter": 3})
    entry = adm.recovered("counter", 7, {"id": "counter/7", "from": "relay", "body": {"add": 1}})
    assert (entry.id, entry.seq, entry.sender, entry.body) == ("counter/7", 7, "relay", {"add": 1})
    decision = adm.cast(None, "counter", 1, None, ROOM, respond=Answers())
    assert isinstance(decision, Accepted)
    assert decision.staged.entry.id == "counter/8"


# ---- dedup ----


def test_a_resend_of_the_last_accepted_number_is_a_duplicate_with_the_first_id() -> None:
    adm = Admission()
    first = send(adm, 1)
    assert isinstance(first, Accepted)
    answer_turn(adm.end_turn())
    answers = Answers()
    again = send(adm, 1, answers=answers)
    assert again == Duplicate(Receipt("counter/1", duplicate=True), unsure=False)
    assert answers.got == []  # answered after the turn's commit, not at once
    turn = adm.end_turn()
    assert turn.staged == []  # nothing queued twice
    assert not turn.batch  # nothing written
    answer_turn(turn)
    assert answers.got == [(Receipt("counter/1", duplicate=True), None)]


def test_an_older_resend_is_a_duplicate_without_an_id_and_the_wire_says_duplicate() -> None:
    adm = Admission()
    send(adm, 1)
    send(adm, 2)
    adm.end_turn()
    older = send(adm, 1)
    assert isinstance(older, Duplicate)
    assert older.receipt == Receipt(None, duplicate=True)  # only the last mark is kept
    assert older.receipt.wire_id == "duplicate"
    assert Receipt("counter/2").wire_id == "counter/2"


def test_a_duplicate_is_recognised_even_when_the_mailbox_is_full() -> None:
    adm = Admission()
    send(adm, 1)
    adm.end_turn()
    assert isinstance(send(adm, 1, recipient=Recipient(True, 5, 5)), Duplicate)
    assert refused_code(send(adm, 2, recipient=Recipient(True, 5, 5))) is ErrorCode.MAILBOX_FULL


def test_dedup_is_per_sender_and_recipient_and_skipped_for_an_unknown_recipient() -> None:
    adm = Admission()
    send(adm, 1)
    assert isinstance(adm.cast("ctl:other", "counter", 1, [1, 0], ROOM, respond=Answers()), Accepted)
    assert isinstance(adm.cast(PRODUCER, "relay", 1, [1, 0], ROOM, respond=Answers()), Accepted)
    assert refused_code(send(adm, 1, recipient=Recipient(known=False))) is ErrorCode.NO_SUCH_AGENT


def test_an_agents_chan_mark_recognises_a_replayed_send_after_a_crash() -> None:
    adm = Admission(chans={("relay", "counter"): [5, 1, "counter/9"]})
    assert adm.cast("relay", "counter", 1, [5, 1], ROOM, respond=Answers()) == \
        Duplicate(Receipt("counter/9", duplicate=True), unsure=False)
    assert isinstance(adm.cast("relay", "counter", 1, [5, 0], ROOM, respond=Answers()), Duplicate)
    accepted = adm.cast("relay", "counter", 1, [6, 0], ROOM, respond=Answers())
    assert isinstance(accepted, Accepted)
    assert adm.chans[("relay", "counter")] == [6, 0, accepted.staged.entry.id]
    assert adm.end_turn().batch.chans == {("relay", "counter"): [6, 0, accepted.staged.entry.id]}


# ---- gaps ----


def test_after_a_refusal_a_gapless_producers_later_numbers_wait_for_the_refused_one() -> None:
    adm = Admission()
    full = Recipient(True, 2, 2)
    assert refused_code(send(adm, 3, recipient=full)) is ErrorCode.MAILBOX_FULL
    assert adm.gaps == {(PRODUCER, "counter"): [3, 0]}
    # Room again, but 4 may not jump the gap ...
    jumped = send(adm, 4)
    assert refused_code(jumped) is ErrorCode.MAILBOX_FULL
    assert "message 3 of this producer was refused; send again from there" in jumped.error.message  # type: ignore[union-attr]
    # ... an earlier refusal moves the gap back; the refused one closes it; then the rest goes in order.
    assert refused_code(send(adm, 2, recipient=full)) is ErrorCode.MAILBOX_FULL
    assert adm.gaps == {(PRODUCER, "counter"): [2, 0]}
    assert refused_code(send(adm, 3)) is ErrorCode.MAILBOX_FULL
    assert isinstance(send(adm, 2), Accepted)
    assert adm.gaps == {}
    assert isinstance(send(adm, 3), Accepted)
    assert isinstance(send(adm, 4), Accepted)
    assert [s.entry.body for s in adm.end_turn().staged] == [{"add": 2}, {"add": 3}, {"add": 4}]


def test_without_gapless_a_refusal_opens_no_gap() -> None:
    adm = Admission()
    assert refused_code(send(adm, 1, recipient=Recipient(True, 2, 2), gapless=False)) is ErrorCode.MAILBOX_FULL
    assert adm.gaps == {}
    assert isinstance(send(adm, 2, gapless=False), Accepted)


# ---- a failed commit ----


def test_a_failed_commit_undoes_seqs_and_marks_so_a_resend_is_taken_anew() -> None:
    adm = Admission(seqs={"counter": 10}, chans={(PRODUCER, "counter"): [1, 0, "counter/9"]})
    a, b = Answers(), Answers()
    assert isinstance(send(adm, 2, answers=a), Accepted)
    assert isinstance(adm.cast(None, "relay", "x", None, ROOM, respond=b), Accepted)
    call = adm.call(None, "counter", {"get": True}, Answers(), ROOM)
    tick = adm.info("counter", {"tick": 1})
    err = FoundationError(ErrorCode.INTERNAL, "could not persist the message: disk full")
    survivors, tell = adm.undo(adm.end_turn(), err)
    assert [s.entry for s in survivors] == [call.staged.entry, tick.entry]  # type: ignore[union-attr]
    assert sorted(id(respond) for respond, _ in tell) == sorted([id(a), id(b)])
    assert all(e is err for _, e in tell)
    assert adm.next_seq == {"counter": 10}  # "relay" had no number before: forgotten again
    assert adm.chans == {(PRODUCER, "counter"): [1, 0, "counter/9"]}
    # The same send again is new, not a duplicate, and gets the number the failed one had.
    again = send(adm, 2)
    assert isinstance(again, Accepted)
    assert again.staged.entry.id == "counter/10"


def test_a_duplicate_of_a_copy_in_the_failed_turn_is_told_the_error_not_an_id() -> None:
    adm = Admission(seqs={"counter": 5}, chans={(PRODUCER, "counter"): [1, 0, "counter/4"]})
    send(adm, 2)
    unsure, sure = Answers(), Answers()
    assert send(adm, 2, answers=unsure) == Duplicate(Receipt("counter/5", duplicate=True), unsure=True)
    assert send(adm, 1, answers=sure) == Duplicate(Receipt(None, duplicate=True), unsure=False)
    err = FoundationError(ErrorCode.INTERNAL, "disk full")
    turn = adm.end_turn()
    _, tell = adm.undo(turn, err)
    answer_turn(turn)
    assert unsure.got == []
    assert (unsure, err) in tell
    assert sure.got == [(Receipt(None, duplicate=True), None)]  # on disk since an earlier turn: still a duplicate
