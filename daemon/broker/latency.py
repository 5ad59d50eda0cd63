"""How long messages take, as histograms for metrics (DESIGN 3.9): a few list increments a message, nothing between.

    accepted: from a message's admission to the end of the group commit that made it durable (its receipt)
    handled:  from its delivery to the recipient's ``done`` (the handler ran and its state was committed)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds


@dataclass
class Latency:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last one: past BUCKETS
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
