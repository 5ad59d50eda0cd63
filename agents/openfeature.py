"""An OpenFeature provider over Foundation's feature flags (DESIGN 3.8), for code written against the OpenFeature API.

    foundationd ──push──> the agent's FlagTable ──FoundationProvider──> openfeature.api ──> client.get_boolean_value

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from agents.openfeature import FoundationProvider

    class Checkout(Agent):
        def mount(self, state):
            api.set_provider(FoundationProvider(self))
            self.features = api.get_client()

        def handle_call(self, msg, state):
            ctx = EvaluationContext(targeting_key=msg["user"])
            return self.features.get_boolean_value("new-checkout", False, ctx), state

The answer is the SDK's own (``Agent.enabled``): local, from the table the daemon pushed, no call. The evaluation
context's ``targeting_key`` is the id a percentage flag buckets; a boolean flag needs none. Details say why:
``STATIC`` (a boolean flag), ``SPLIT`` (a percentage: ``flag_metadata`` has the id's ``bucket`` and the ``percent``),
``DISABLED`` (the kill switch; value False); an unknown flag is ``FLAG_NOT_FOUND``, a percentage flag without a
targeting key ``TARGETING_KEY_MISSING``, and a non-boolean type ``TYPE_MISMATCH``: each of those returns the
caller's default, as OpenFeature prescribes. Foundation's flags are booleans (on for an id or not), so only
``resolve_boolean_details`` answers.

Needs the optional extra: ``pip install 'foundation[openfeature]'`` (``openfeature-sdk``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from agents.sdk import Agent
from ipc.flags import FlagTable, bucket, evaluate

T = TypeVar("T")


class FoundationProvider(AbstractProvider):
    """Flags of a running agent (``FoundationProvider(agent)``), or of any ``FlagTable`` (a test's)."""

    def __init__(self, source: Agent | FlagTable) -> None:
        super().__init__()
        self._table: Callable[[], FlagTable] = source.flag_table if isinstance(source, Agent) else lambda: source

    def get_metadata(self) -> Metadata:
        return Metadata(name="foundation")

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        table = self._table()
        flag = table.flags.get(flag_key)
        if flag is None:
            return _error(default_value, ErrorCode.FLAG_NOT_FOUND, f"no flag named {flag_key!r}")
        ident = evaluation_context.targeting_key if evaluation_context is not None else None
        meta: dict[str, bool | int | float | str] = {"percent": int(flag.get("percent", 0)), "version": table.version}
        if flag.get("killed"):
            return FlagResolutionDetails(False, reason=Reason.DISABLED, variant="off", flag_metadata=meta)
        if flag.get("kind") == "boolean":
            value = evaluate(flag, flag_key, ident or "")
            return FlagResolutionDetails(value, reason=Reason.STATIC, variant="on" if value else "off",
                                         flag_metadata=meta)
        if not ident:
            return _error(default_value, ErrorCode.TARGETING_KEY_MISSING,
                          f"{flag_key!r} is a percentage flag: the evaluation context needs a targeting_key")
        value = evaluate(flag, flag_key, ident)
        return FlagResolutionDetails(value, reason=Reason.SPLIT, variant="on" if value else "off",
                                     flag_metadata={**meta, "bucket": bucket(flag_key, ident)})

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return _mismatch(default_value)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return _mismatch(default_value)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return _mismatch(default_value)

    def resolve_object_details(self, flag_key: str,
                               default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
                               evaluation_context: EvaluationContext | None = None,
                               ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return _mismatch(default_value)


def _error(default: T, code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(default, error_code=code, error_message=message, reason=Reason.ERROR)


def _mismatch(default: Any) -> FlagResolutionDetails[Any]:
    return _error(default, ErrorCode.TYPE_MISMATCH, "Foundation's flags are booleans: use get_boolean_value")
