"""Per-child restart delay: exponential, jittered, capped; a pure function of the attempt number."""

from __future__ import annotations

import random

from daemon.core.spec import Backoff


def delay(policy: Backoff, attempt: int, rng: random.Random) -> float:
    """Seconds to wait before restart number ``attempt`` (0-based) of a crash loop."""
    try:
        grown = policy.initial * policy.factor**attempt
    except OverflowError:  # a long crash loop: factor**attempt is past the float range, so past max
        grown = policy.max
    base = min(policy.max, grown)
    spread = base * policy.jitter
    return max(0.0, min(policy.max, base + rng.uniform(-spread, spread)))
