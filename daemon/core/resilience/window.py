"""A time-bucketed sliding window of counters: what breakers, retry budgets and the error tracker count with.

    now ──> bucket = floor(now / width)      [b-9][b-8] ... [b-1][b]   (``buckets`` of ``width`` seconds)
                                              └── older than now - length: dropped at the next touch

Counts are kept per bucket, so a window of 10 s in 10 buckets forgets a call between 9 and 10 s after it, with no
timer and no per-call list. Pure: the time is passed in.
"""

from __future__ import annotations

import math
from collections import deque


class Window:
    def __init__(self, length: float, buckets: int = 10, fields: int = 1) -> None:
        if length <= 0 or buckets < 1:
            raise ValueError("a window needs a positive length and at least one bucket")
        self.length = length
        self.width = length / buckets
        self.fields = fields
        self._buckets: deque[tuple[int, list[float]]] = deque()  # (bucket number, counts), oldest first

    def add(self, now: float, *counts: float) -> None:
        number = math.floor(now / self.width)
        self._expire(number)
        if not self._buckets or self._buckets[-1][0] != number:
            self._buckets.append((number, [0.0] * self.fields))
        row = self._buckets[-1][1]
        for i, count in enumerate(counts):
            row[i] += count

    def totals(self, now: float) -> list[float]:
        self._expire(math.floor(now / self.width))
        out = [0.0] * self.fields
        for _, row in self._buckets:
            for i, count in enumerate(row):
                out[i] += count
        return out

    def clear(self) -> None:
        self._buckets.clear()

    def _expire(self, number: int) -> None:
        oldest = number - round(self.length / self.width) + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
