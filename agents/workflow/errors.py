"""What a ``python`` step raises to say how it failed, in the one error shape (DESIGN 3.7).

Retried: ``infrastructure``, ``timeout``, ``unavailable``. Never: ``business``, ``validation``. An exception of
another type is classified by ``classify``: OSError and ConnectionError are infrastructure, TimeoutError is a
timeout, anything else a business error (a bug is not cured by running it again). The categories, the codes' table
and the classifier are ipc/errors.py's, shared with the resilience SDK (agents/resilience.py); the names here stay.
"""

from __future__ import annotations

from typing import Any

from ipc.errors import CATEGORIES, CODE_CATEGORIES, RETRIED, shape
from ipc.errors import classify as _classify

__all__ = ["CATEGORIES", "CODE_CATEGORIES", "RETRIED", "BusinessError", "InfrastructureError", "StepError",
           "ValidationError", "classify", "error"]


class StepError(Exception):
    """Raise from a step to fail it with a code and category of your choosing."""

    category = "business"

    def __init__(self, message: str, code: str | None = None, category: str | None = None,
                 context: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code or type(self).__name__
        if category is not None:
            if category not in CATEGORIES:
                raise ValueError(f"category must be one of {', '.join(CATEGORIES)}, not {category!r}")
            self.category = category
        self.context = context or {}


class BusinessError(StepError):
    category = "business"


class ValidationError(StepError):
    category = "validation"


class InfrastructureError(StepError):
    category = "infrastructure"


def error(code: str, category: str, message: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return shape(code, category, message, context, retryable=category in RETRIED)


def classify(exc: BaseException) -> dict[str, Any]:
    """The error shape of an exception raised by a step (or by the call it made): ipc.errors.classify, with an
    exception of no known kind a business error."""
    return _classify(exc, unknown="business")
