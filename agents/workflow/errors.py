"""What a ``python`` step raises to say how it failed, in the one error shape (DESIGN 3.7).

Retried: ``infrastructure``, ``timeout``, ``unavailable``. Never: ``business``, ``validation``. An exception of
another type is classified by ``classify``: OSError and ConnectionError are infrastructure, TimeoutError is a
timeout, anything else a business error (a bug is not cured by running it again).
"""

from __future__ import annotations

from typing import Any

from ipc.errors import FoundationError

CATEGORIES = ("business", "validation", "infrastructure", "timeout", "unavailable", "internal")
RETRIED = frozenset({"infrastructure", "timeout", "unavailable"})
# The daemon's error codes, by the category a workflow step treats them as.
CODE_CATEGORIES = {
    "timeout": "timeout", "agent_down": "unavailable", "no_such_agent": "unavailable", "mailbox_full": "unavailable",
    "shutting_down": "unavailable", "handler_error": "business", "invalid_state": "business",
    "bad_request": "validation", "too_large": "validation", "spawn_failed": "infrastructure",
    "internal": "internal",
}


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
    return {"code": code, "category": category, "message": message, "context": context or {},
            "retryable": category in RETRIED}


def classify(exc: BaseException) -> dict[str, Any]:
    """The error shape of an exception raised by a step (or by the call it made)."""
    if isinstance(exc, StepError):
        return error(exc.code, exc.category, str(exc), exc.context)
    if isinstance(exc, FoundationError):
        return error(str(exc.code), CODE_CATEGORIES.get(str(exc.code), "internal"), exc.message)
    if isinstance(exc, TimeoutError):
        return error("timeout", "timeout", str(exc) or "timed out")
    if isinstance(exc, OSError):
        return error(type(exc).__name__, "infrastructure", str(exc))
    return error(type(exc).__name__, "business", str(exc))
