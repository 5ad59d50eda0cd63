"""Which message may enter which mailbox, and what one loop turn commits: admission, dedup and staging.

Pure: plain data in (the recipient's size and bound, the sender's numbering), decisions out. No sockets, no
LMDB, no loop: the broker reads the mailbox, asks here, and acts on the answer.

    cast(sender, to, chan) ──> resend of an accepted (producer, seq)? ──yes──> Duplicate   answered after the
        │ no                                                                               turn's commit
        v
      behind a producer's gap? ──yes──> Refused(mailbox_full, "send again from there")
        │ no
        v
      admit: recipient known, queued + staged < bound, frame fits ──no──> Refused(no_such_agent | mailbox_full
        │ yes                                                             | too_large); a gapless producer's
        v                                                                 first refused number opens a gap
      Accepted: entry staged; the batch gets its put, the next seq and the channel mark (old values kept)

    end_turn() ──> Turn(batch, staged, duplicates) ──commit ok──> push to mailboxes, accept, answer duplicates
                                                  └─failed───> undo(turn): seqs and marks as before; who was
                                                               promised a write this turn gets the error

* A resend is recognised by its channel mark ``[cause, index, id]``: the last accepted ``chan`` of one sender to
  one recipient. An agent's casts carry ``chan = [message it was handling, n-th send]``; an external producer's
  ``send`` carries ``[seq, 0]``. Only the last mark is kept, so the id of an older resend is no longer known.
* Gapless (external producers): after a refusal, later numbers of that producer are refused too until the
  refused one comes again, so a rerun from the gap loses nothing and reorders nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from daemon.broker.mailbox import Entry
from ipc import wire
from ipc.errors import ErrorCode, FoundationError

Respond = Callable[[Any, FoundationError | None], None]  # (result, error): exactly one is set

DUPLICATE_ID = "duplicate"  # what an agent's accept says for a resend older than the last mark (wire, unchanged)


class Receipt(NamedTuple):  # a NamedTuple, as Recipient: one is made per message, and tuples are made fastest
    """A cast's answer: its id, or that it was already accepted (``id`` None: older than the last mark)."""

    id: str | None
    duplicate: bool = False

    @property
    def wire_id(self) -> str:
        """The id an agent's ``accept`` frame carries."""
        return self.id if self.id is not None else DUPLICATE_ID


class Recipient(NamedTuple):
    """What admission needs of a recipient, read by the broker when the message arrives."""

    known: bool  # an agent of that name is in the tree
    queued: int = 0  # in its mailbox now (queued and in flight)
    bound: int = 0


@dataclass
class Batch:
    """What one loop turn changes on disk; committed at once."""

    puts: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    deletes: list[tuple[str, int]] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)
    chans: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    # What memory held before this batch, to put back if the commit fails.
    undo_seqs: dict[str, int | None] = field(default_factory=dict)
    undo_chans: dict[tuple[str, str], list[Any] | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes or self.seqs or self.chans)


@dataclass(slots=True)
class Staged:
    recipient: str
    entry: Entry
    respond: Respond | None  # answered with a Receipt once committed (casts); None for calls and infos


@dataclass(slots=True)
class Accepted:
    staged: Staged


@dataclass(slots=True)
class Duplicate:
    receipt: Receipt
    unsure: bool  # the first copy is staged in this same turn: its answer depends on the commit


@dataclass(slots=True)
class Refused:
    error: FoundationError


Decision = Accepted | Duplicate | Refused


@dataclass
class Turn:
    """Everything one loop turn admitted, handed over for the group commit."""

    batch: Batch
    staged: list[Staged]
    duplicates: list[tuple[Respond, Duplicate]]


class Admission:
    def __init__(self, seqs: dict[str, int] | None = None,
                 chans: dict[tuple[str, str], list[Any]] | None = None) -> None:
        self.next_seq: dict[str, int] = dict(seqs or {})
        self.chans: dict[tuple[str, str], list[Any]] = dict(chans or {})
        self.gaps: dict[tuple[str, str], list[int]] = {}  # a gapless producer's first refused number
        self._counter = 0  # numbers the ids of calls and infos
        self._batch = Batch()
        self._staged: list[Staged] = []
        self._staged_count: dict[str, int] = {}
        self._duplicates: list[tuple[Respond, Duplicate]] = []
        self._deletes: list[tuple[str, int]] = []  # done casts not yet deleted on disk (see done)

    def __bool__(self) -> bool:
        """Whether anything waits for the next commit."""
        return bool(self._batch or self._staged or self._duplicates or self._deletes)

    @property
    def deletes_pending(self) -> int:
        """Done casts whose deletion waits for a commit that has to happen anyway (or for the idle flush)."""
        return len(self._deletes)

    def recovered(self, recipient: str, seq: int, record: dict[str, Any]) -> Entry:
        """An undone cast read back from the outbox at start: its entry; later casts to it number after it."""
        self.next_seq[recipient] = max(self.next_seq.get(recipient, 1), seq + 1)
        return Entry(record["id"], seq, record.get("from"), record.get("body"))

    def cast(self, sender: str | None, to: str, body: Any, chan: list[int] | None, recipient: Recipient, *,
             respond: Respond, gapless: bool = False) -> Decision:
        """Admit one cast, or say why not. A refusal is for the caller to answer at once; a duplicate is answered
        from ``end_turn`` (the first copy may still be staged, not yet on disk)."""
        # A resend of an accepted cast is recognised before the bound is looked at: it adds nothing.
        if chan is not None and sender is not None and recipient.known:
            mark = self.chans.get((sender, to))
            if mark is not None and chan <= mark[:2]:
                receipt = Receipt(mark[2] if chan == mark[:2] else None, duplicate=True)
                before = self._batch.undo_chans.get((sender, to), mark)  # the mark on disk before this turn
                decision = Duplicate(receipt, unsure=before is None or chan > before[:2])
                self._duplicates.append((respond, decision))
                return decision
        key = (sender or "", to)
        gap = self.gaps.get(key) if gapless else None
        if gap is not None and chan is not None and chan > gap:
            return Refused(FoundationError(ErrorCode.MAILBOX_FULL,
                                           f"message {gap[0]} of this producer was refused; send again from there"))
        seq = self.next_seq.get(to, 1)
        entry = Entry(f"{to}/{seq}", seq, sender, body)
        refused = self._admit(to, entry, recipient)
        if refused is not None:
            if gapless and chan is not None and (gap is None or chan < gap):
                self.gaps[key] = chan
            return refused
        if gap is not None and chan == gap:
            del self.gaps[key]
        batch = self._batch
        batch.undo_seqs.setdefault(to, self.next_seq.get(to))
        self.next_seq[to] = seq + 1
        batch.puts.append((to, seq, {"id": entry.id, "from": sender, "body": body}))
        batch.seqs[to] = seq + 1
        if chan is not None and sender is not None:
            batch.undo_chans.setdefault((sender, to), self.chans.get((sender, to)))
            self.chans[(sender, to)] = batch.chans[(sender, to)] = [*chan, entry.id]
        return Accepted(self._stage(to, entry, respond))

    def call(self, sender: str | None, to: str, body: Any, caller: Respond, recipient: Recipient) -> Decision:
        """Admit a call: queued behind earlier casts, not persisted (a caller waiting on a dead daemon is gone too)."""
        self._counter += 1
        entry = Entry(f"{to}/call-{self._counter}", None, sender, body, kind="call", caller=caller)
        refused = self._admit(to, entry, recipient)
        return refused if refused is not None else Accepted(self._stage(to, entry, None))

    def info(self, to: str, body: Any) -> Staged:
        """A notice from the daemon itself (a tick, a down notice): never refused, never persisted."""
        self._counter += 1
        return self._stage(to, Entry(f"{to}/info-{self._counter}", None, None, body, kind="info"), None)

    def done(self, recipient: str, entry: Entry) -> bool:
        """The recipient finished ``entry``: a persisted one is to be deleted. True if it was.

        The deletion needs no durability of its own: the recipient committed ``entry.seq`` with its state before it
        said done, so a message whose deletion a crash undid comes again and is skipped there. Deletions therefore
        wait for the next commit that is made anyway (an accepted message must be on disk before its answer), and
        cost no fsync of their own; ``end_turn(deletes=True)`` takes them alone (the broker's idle flush)."""
        if entry.seq is None:
            return False
        self._deletes.append((recipient, entry.seq))
        return True

    def end_turn(self, *, deletes: bool = False) -> Turn:
        """Hand over what this turn admitted; the next turn starts empty. Pending deletions ride along when the
        batch commits anyway, or when ``deletes`` asks for them."""
        if self._deletes and (self._batch or deletes):
            self._batch.deletes, self._deletes = self._deletes, []
        turn = Turn(self._batch, self._staged, self._duplicates)
        self._batch, self._staged, self._staged_count, self._duplicates = Batch(), [], {}, []
        return turn

    def undo(self, turn: Turn, error: FoundationError) -> tuple[list[Staged], list[tuple[Respond, FoundationError]]]:
        """The turn's commit failed: forget the seqs and channel marks it would have written, so a resend is taken
        anew. Returns what may still go out (calls and infos, never on disk) and who must be told ``error``."""
        for name, old in turn.batch.undo_seqs.items():
            if old is None:
                self.next_seq.pop(name, None)
            else:
                self.next_seq[name] = old
        for key, mark in turn.batch.undo_chans.items():
            if mark is None:
                self.chans.pop(key, None)
            else:
                self.chans[key] = mark
        tell = [(s.respond, error) for s in turn.staged if s.entry.persisted and s.respond is not None]
        tell += [(respond, error) for respond, dup in turn.duplicates if dup.unsure]
        turn.duplicates = [(respond, dup) for respond, dup in turn.duplicates if not dup.unsure]
        return [s for s in turn.staged if not s.entry.persisted], tell

    def _admit(self, to: str, entry: Entry, recipient: Recipient) -> Refused | None:
        if not recipient.known:
            return Refused(FoundationError(ErrorCode.NO_SUCH_AGENT, f"no agent named {to!r}"))
        if recipient.queued + self._staged_count.get(to, 0) >= recipient.bound:
            return Refused(FoundationError(ErrorCode.MAILBOX_FULL,
                                           f"mailbox of {to!r} is full ({recipient.bound} messages)"))
        try:  # once accepted, a message whose delivery frame is over the limit would stay in flight forever
            entry.frame = wire.encode("deliver", id=entry.id, seq=entry.seq, sender=entry.sender, body=entry.body,
                                      call=entry.kind == "call", info=entry.kind == "info")  # sent as it is
        except wire.WireError as err:
            return Refused(err)
        return None

    def _stage(self, to: str, entry: Entry, respond: Respond | None) -> Staged:
        staged = Staged(to, entry, respond)
        self._staged.append(staged)
        self._staged_count[to] = self._staged_count.get(to, 0) + 1
        return staged
