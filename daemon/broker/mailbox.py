"""Per-recipient delivery bookkeeping: queued, in flight, done. Pure data, no sockets, no LMDB.

    push ──> queue ──take(window)──> inflight ──done(id)──> gone
                ^                        │
                └──── reset() on death ──┘  (persisted entries go back to the front, in order;
                                             volatile ones — calls, ticks — are returned to fail)

Entries leave in the order they arrived, so messages from one sender to one recipient keep their order,
and a recipient that restarts sees its unfinished messages again, oldest first.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    id: str
    seq: int | None  # the mailbox sequence of a persisted cast; None for volatile entries
    sender: str | None
    body: Any
    kind: str = "cast"  # cast | call | info
    caller: Any = None  # where a call's reply goes (opaque to the mailbox)
    at: float = field(default_factory=time.monotonic)  # admitted (or loaded at the daemon's start): metrics' ages
    sent: float = 0.0  # last delivered (monotonic), for the handling latency
    # the deliver frame, encoded once at admission (where its size is checked) and sent as it is
    frame: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def persisted(self) -> bool:
        return self.seq is not None


class Mailbox:
    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.queue: deque[Entry] = deque()
        self.inflight: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.queue) + len(self.inflight)

    @property
    def full(self) -> bool:
        return len(self) >= self.bound

    def push(self, entry: Entry) -> None:
        self.queue.append(entry)

    def take(self, window: int) -> list[Entry]:
        """Move entries into flight until ``window`` are outstanding; return the ones to send now."""
        out = []
        while self.queue and len(self.inflight) < window:
            entry = self.queue.popleft()
            self.inflight[entry.id] = entry
            out.append(entry)
        return out

    def done(self, entry_id: str) -> Entry | None:
        return self.inflight.pop(entry_id, None)

    def reset(self) -> list[Entry]:
        """The recipient died: persisted in-flight entries go back to the front; volatile ones are returned."""
        lost = [e for e in self.inflight.values() if not e.persisted]
        again = [e for e in self.inflight.values() if e.persisted]
        self.inflight.clear()
        self.queue.extendleft(reversed(again))
        return lost

    def oldest(self) -> float | None:
        """When the oldest entry still queued or in flight was admitted."""
        heads = [self.queue[0].at] if self.queue else []
        if self.inflight:
            heads.append(next(iter(self.inflight.values())).at)
        return min(heads) if heads else None

    def drain(self) -> list[Entry]:
        """Everything, for a recipient that is gone for good."""
        entries = [*self.inflight.values(), *self.queue]
        self.inflight.clear()
        self.queue.clear()
        return entries
