"""The CI-sized chaos run (part of ``make test``): a few short rounds of every nemesis against real daemons, and
the checker finds nothing. ``make chaos ROUNDS=N`` is the long run; docs/reliability.md has its figures."""

from __future__ import annotations

import pytest

from tests.chaos.nemesis import ALL
from tests.chaos.run import HEADER, details, row, run_round


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_chaos_rounds_lose_duplicate_and_reorder_nothing(tmp_path) -> None:
    rounds = [run_round(k, tmp_path / f"round-{k}", seed=16, nemeses=ALL, duration=6.0) for k in (1, 2, 3)]
    report = "\n".join([HEADER, *map(row, rounds), *(line for r in rounds for line in details(r))])
    for r in rounds:
        assert r.result.counts == (0, 0, 0, 0), report
        assert r.result.valid, report
        assert not r.problems, report
        assert r.result.ops["send ok"] > 100, report  # there was load
    assert sum(sum(r.faults.values()) for r in rounds) >= 6, report  # and there were faults
