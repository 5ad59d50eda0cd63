"""What the fuzz tests (tests/test_fuzz_*.py) share: example counts, JSON and TOML strategies, a daemon's health.

``make test`` runs a CI-sized number of examples per test, derandomized (the same inputs every run); ``make fuzz``
(``FOUNDATION_FUZZ_EXAMPLES=100000``) runs the long one with fresh random inputs.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import psutil
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = int(os.environ.get("FOUNDATION_FUZZ_EXAMPLES", "0"))


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings: ``ci_examples`` (derandomized) in make test, FOUNDATION_FUZZ_EXAMPLES in a long run."""
    return settings(max_examples=LONG or ci_examples, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
                    print_blob=True)


SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value (big integers included: orjson refuses those past 64 bits)."""
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=max_leaves)


def nested(depth: int, kind: str = "list") -> bytes:
    """JSON nested ``depth`` deep: ``[[[...]]]`` or ``{"a":{"a":...}}``."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


# ---- TOML, from Python values (inline tables throughout: one line per top-level key) ----

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items())


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)
