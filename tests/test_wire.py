"""The broker's frame schema (ipc/wire.py): what every kind needs, and the stable error for what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ipc import wire
from ipc.errors import ErrorCode

# One valid example of every kind; the schema test below insists that this table covers SCHEMA exactly.
VALID: dict[str, dict[str, Any]] = {
    "hello": {"name": "counter", "token": "ab" * 16},
    "welcome": {"name": "counter", "heartbeat": 1.0},
    "cast": {"ref": 1, "to": "counter", "body": {"add": 1}},
    "call": {"ref": 2, "to": "counter", "body": {"get": True}, "timeout": 5},
    "accept": {"ref": 1, "id": "counter/1"},
    "reject": {"ref": 1, "error": {"code": "mailbox_full", "message": "full"}},
    "deliver": {"id": "counter/1", "seq": 1, "sender": None, "body": {"add": 1}, "call": False, "info": False},
    "done": {"id": "counter/1"},
    "reply": {"ref": 2},
    "heartbeat": {},
    "monitor": {"ref": 3, "target": "counter"},
    "demonitor": {"ref": 3},
    "down": {"ref": 3, "target": "counter", "reason": "killed by SIGKILL"},
    "timer": {"ref": 4, "after": 0.5, "every": None},
    "cancel_timer": {"ref": 4},
    "tick": {"ref": 4},
    "error": {"error": {"code": "bad_request", "message": "no"}},
    "svc": {"ref": 5, "op": "breaker.permit", "args": {"name": "payments"}},
    "svc_cast": {"op": "report", "args": {"breakers": {"payments": [3, 1, 0]}}},
    "breaker": {"name": "payments", "state": "open"},
    "resume": {"received": 7},
    "resumed": {"sent": 9},
    "answer": {"id": "bridge/7"},
    "routes": {"ref": 6, "node": "a", "remote": {"counter": "b"}},
}



def frame(obj: Any) -> bytes:
    return orjson.dumps(obj)


def code_of(raw: bytes) -> ErrorCode:
    with pytest.raises(wire.WireError) as info:
        wire.decode(raw)
    return info.value.code


def test_the_examples_cover_every_kind() -> None:
    assert set(VALID) == set(wire.SCHEMA)
    for kind, fields in VALID.items():
        assert set(fields) == set(wire.SCHEMA[kind]), kind


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_kind_round_trips(kind: str) -> None:
    raw = wire.encode(kind, **VALID[kind])
    assert wire.decode(raw) == {"kind": kind, **VALID[kind]}


def test_optional_fields_take_null_and_numbers_take_ints_or_floats() -> None:
    assert wire.decode(frame({"kind": "hello", "name": None, "token": None}))["name"] is None
    assert wire.decode(frame({"kind": "timer", "ref": 1, "after": 0, "every": 2}))["every"] == 2
    assert wire.decode(frame({"kind": "timer", "ref": 1, "after": 0.25, "every": 0.5}))["after"] == 0.25
    deliver = {**VALID["deliver"], "seq": None, "sender": "relay", "call": True}
    assert wire.decode(frame({"kind": "deliver", **deliver}))["seq"] is None


def test_extra_fields_are_kept_for_the_handler() -> None:
    # cast.chan, done.reply / done.error and reply.body / reply.error are optional and not in SCHEMA.
    msg = wire.decode(frame({"kind": "cast", **VALID["cast"], "chan": [3, 1]}))
    assert msg["chan"] == [3, 1]
    assert wire.decode(frame({"kind": "done", "id": "x/1", "reply": {"count": 1}}))["reply"] == {"count": 1}


def test_any_json_value_is_a_body() -> None:
    for body in (None, 0, "text", [1, [2]], {"deep": {"er": [None]}}, True):
        assert wire.decode(frame({"kind": "cast", "ref": 1, "to": "a", "body": body}))["body"] == body


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in sorted(VALID.items()) for f in fields])
def test_a_missing_field_is_bad_request(kind: str, field: str) -> None:
    obj = {"kind": kind, **VALID[kind]}
    del obj[field]
    with pytest.raises(wire.WireError) as info:
        wire.decode(frame(obj))
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert f"'{field}'" in info.value.message


def _typed_fields() -> list[tuple[str, str, Any]]:
    cases = []
    for kind, fields in sorted(wire.SCHEMA.items()):
        for name, types in fields.items():
            if types is wire._ANY:
                continue
            accepted = types if isinstance(types, tuple) else (types,)
            if str in accepted:
                wrong: Any = 12
            elif dict in accepted:
                wrong = ["not", "an", "object"]
            else:  # numbers and bools
                wrong = "7"
            cases.append((kind, name, wrong))
    return cases


@pytest.mark.parametrize(("kind", "field", "wrong"), _typed_fields())
def test_a_mistyped_field_is_bad_request(kind: str, field: str, wrong: Any) -> None:
    obj = {"kind": kind, **VALID[kind], field: wrong}
    with pytest.raises(wire.WireError) as info:
        wire.decode(frame(obj))
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert f"{kind}.{field}" in info.value.message


@pytest.mark.parametrize(("kind", "field"), [
    ("cast", "ref"), ("call", "timeout"), ("welcome", "heartbeat"), ("deliver", "seq"), ("timer", "after"),
    ("timer", "every"), ("tick", "ref"), ("monitor", "ref"),
])
def test_a_bool_is_not_a_number(kind: str, field: str) -> None:
    # JSON true is a Python bool, which is an int: the schema must still refuse it where a number is asked.
    assert code_of(frame({"kind": kind, **VALID[kind], field: True})) is ErrorCode.BAD_REQUEST


def test_a_bool_field_takes_only_bools() -> None:
    assert code_of(frame({"kind": "deliver", **VALID["deliver"], "call": 0})) is ErrorCode.BAD_REQUEST
    assert code_of(frame({"kind": "deliver", **VALID["deliver"], "info": None})) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("raw", [b"[]", b'["cast"]', b'"cast"', b"1", b"null", b"true"])
def test_a_frame_that_is_not_an_object_is_bad_request(raw: bytes) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(raw)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "object" in info.value.message


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"kind": "cast",}', b"{'kind': 'cast'}"])
def test_a_frame_that_is_not_json_is_bad_request(raw: bytes) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(raw)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "not JSON" in info.value.message


@pytest.mark.parametrize("obj", [{}, {"kind": "nope"}, {"kind": 1}, {"kind": None}, {"kind": "Cast"},
                                 {"kind": ["cast"]}])
def test_an_unknown_kind_is_bad_request(obj: dict[str, Any]) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(frame(obj))
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "unknown kind" in info.value.message


def _cast_of_size(size: int) -> bytes:
    empty = frame({"kind": "cast", "ref": 1, "to": "a", "body": ""})
    raw = frame({"kind": "cast", "ref": 1, "to": "a", "body": "x" * (size - len(empty))})
    assert len(raw) == size
    return raw


def test_a_frame_at_the_limit_is_accepted_and_one_byte_more_is_too_large() -> None:
    assert len(wire.decode(_cast_of_size(wire.MAX_MESSAGE))["body"]) > 1_000_000
    assert code_of(_cast_of_size(wire.MAX_MESSAGE + 1)) is ErrorCode.TOO_LARGE
    # The size is checked before parsing: an oversized frame of garbage is too_large, not bad_request.
    assert code_of(b"\0" * (wire.MAX_MESSAGE + 1)) is ErrorCode.TOO_LARGE


def test_encode_refuses_a_frame_over_the_limit() -> None:
    with pytest.raises(wire.WireError) as info:
        wire.encode("cast", ref=1, to="a", body="x" * wire.MAX_MESSAGE)
    assert info.value.code is ErrorCode.TOO_LARGE
    assert "cast frame" in info.value.message


def test_wire_errors_cross_the_wire_in_the_one_error_shape() -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(b"{")
    body = info.value.to_wire()
    assert body["code"] == "bad_request"
    assert set(body) == {"code", "message", "category", "context", "retryable"}  # (DESIGN 3.7; code and message
    assert (body["category"], body["retryable"]) == ("validation", False)        # are what older peers read)
    assert wire.decode(wire.encode("error", error=body))["error"] == body
    assert wire.error_body(ErrorCode.UNAUTHORIZED, "no") == {"code": "unauthorized", "message": "no",
                                                             "category": "validation", "context": {},
                                                             "retryable": False}
