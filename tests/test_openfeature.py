"""The OpenFeature provider (agents/openfeature.py): OpenFeature's client answers what ``Agent.enabled`` answers,
with OpenFeature's reasons and error codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from agents.openfeature import FoundationProvider
from agents.sdk import Agent
from agents.testing import AgentHarness

pytestmark = pytest.mark.timeout(30)


class Shop(Agent):
    def init(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def shop() -> Iterator[tuple[AgentHarness, OpenFeatureClient]]:
    harness = AgentHarness(Shop)
    api.set_provider(FoundationProvider(harness.agent), domain="shop")
    try:
        yield harness, api.get_client("shop")
    finally:
        api.clear_providers()


def user(ident: str) -> EvaluationContext:
    return EvaluationContext(targeting_key=ident)


def test_the_client_answers_as_enabled_does(shop: tuple[AgentHarness, OpenFeatureClient]) -> None:
    harness, client = shop
    harness.set_flag("checkout", 30)
    for i in range(200):
        ident = f"user-{i}"
        assert client.get_boolean_value("checkout", not harness.agent.enabled("checkout", ident), user(ident)) is (
            harness.agent.enabled("checkout", ident))
    details = client.get_boolean_details("checkout", False, user("user-6"))
    assert (details.value, details.reason, details.variant) == (True, Reason.SPLIT, "on")
    assert details.flag_metadata == {"percent": 30, "version": 0, "bucket": 1}
    harness.set_flag("checkout", 60)  # a new table: answered at once, with no call
    assert client.get_boolean_details("checkout", False, user("user-6")).flag_metadata["version"] == 1


def test_reasons_and_errors(shop: tuple[AgentHarness, OpenFeatureClient]) -> None:
    harness, client = shop
    harness.set_flag("parser", "on")
    details = client.get_boolean_details("parser", False)
    assert (details.value, details.reason) == (True, Reason.STATIC)  # a boolean needs no targeting key
    harness.set_flag("parser", "on", killed=True)
    details = client.get_boolean_details("parser", True, user("a"))
    assert (details.value, details.reason) == (False, Reason.DISABLED)  # the kill switch wins
    missing = client.get_boolean_details("ghost", True, user("a"))
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)  # the caller's default
    harness.set_flag("checkout", 30)
    keyless = client.get_boolean_details("checkout", True)
    assert (keyless.value, keyless.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)
    text = client.get_string_details("checkout", "x", user("a"))
    assert (text.value, text.error_code) == ("x", ErrorCode.TYPE_MISMATCH)
