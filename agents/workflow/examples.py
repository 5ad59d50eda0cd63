"""Small functions for ``python`` steps in the examples and tests."""

from __future__ import annotations


def add(a: int, b: int) -> int:
    return a + b


def noop() -> None:
    return None
