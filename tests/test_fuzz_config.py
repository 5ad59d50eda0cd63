"""Fuzzing the config parser (issue 16, item 4): whatever a config file says, foundationd either takes it or
refuses it with one ConfigError line naming the file (exit 2); never another exception, never a second line.

Three sources: trees of the known keys with values of every type (often the wrong one), random text, and the
annotated demo config with bytes cut out, doubled or replaced. ``attach`` validates a child with the same code
(``child_spec_from_dict``): fuzzed directly with the same trees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.config import (
    _BACKOFF_KEYS,
    _DAEMON_KEYS,
    _WORKER_KEYS,
    _WORKFLOWS_KEYS,
    LIMIT_NAMES,
    ConfigError,
    child_spec_from_dict,
    load_config,
    parse_config,
)
from tests.chaos.fuzzing import fuzz_settings, toml_document

pytestmark = pytest.mark.timeout(120)

DEFAULT = (Path(__file__).resolve().parents[1] / "daemon" / "default.toml").read_text()
KEYS = sorted({*_WORKER_KEYS, "children", "strategy", "intensity", "period", *_BACKOFF_KEYS, *LIMIT_NAMES})
GOOD = {
    "command": st.sampled_from([["sleep", "1"], ["true"], [], [""], ["/nonexistent"]]),
    "agent": st.sampled_from(["agents.examples.counter:Counter", "x:Y", "nocolon", ":", "a:"]),
    "restart": st.sampled_from(["permanent", "transient", "temporary", "sometimes"]),
    "strategy": st.sampled_from(["one_for_one", "one_for_all", "rest_for_one", "all_for_none"]),
    "shutdown": st.sampled_from([5.0, 0, -1, "brutal_kill", "infinity", "never", 1e308]),
    "ready": st.sampled_from(["exec", "notify", "maybe"]),
    "on_intensity": st.sampled_from(["escalate", "park", "ignore"]),
    "umask": st.sampled_from(["0027", "777", "8", "", "00000"]),
    "max_memory": st.sampled_from(["512M", "1T", "0", "-1", "12Q", "99999999999999999999G"]),
    "user": st.sampled_from(["root", "nobody", "no-such-user-x", "0", ""]),
}
SCALAR = (st.none().map(lambda _: "") | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
          | st.floats() | st.text(max_size=20))


def value_for(key: str, children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    wrong = SCALAR | st.lists(SCALAR, max_size=3) | st.dictionaries(st.sampled_from(KEYS), SCALAR, max_size=3)
    if key == "children":
        return st.lists(children, max_size=3) | wrong
    return GOOD[key] | wrong if key in GOOD else wrong


def tables(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """A child table: some known keys (names from a small set, so that duplicates happen), maybe unknown ones."""
    children: st.SearchStrategy[Any] = st.just({}) if depth == 0 else tables(depth - 1)
    keys = st.lists(st.sampled_from(KEYS) | st.text(min_size=1, max_size=8), max_size=6, unique=True)
    return keys.flatmap(lambda ks: st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c", "root", "", "a b", "x" * 300]) | SCALAR,
         **{k: value_for(k, children) for k in ks if k != "name"}}))


def documents() -> st.SearchStrategy[dict[str, Any]]:
    section = st.dictionaries(st.sampled_from([*_DAEMON_KEYS, *_WORKFLOWS_KEYS, "listen", "other"]),
                              SCALAR | st.sampled_from(["127.0.0.1:9464", ":0", "[::1]:80", "host:99999"]),
                              max_size=3)
    supervisor = tables().map(lambda t: {k: v for k, v in t.items() if k != "name"})
    return st.fixed_dictionaries({}, optional={
        "supervisor": supervisor | SCALAR, "daemon": section, "metrics": section, "workflows": section,
        "surprise": SCALAR})


def parses_or_refuses_in_one_line(text: str) -> None:
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        line = str(exc)
        assert line.startswith("fuzz.toml: ")
        assert "\n" not in line


@fuzz_settings(200)
@given(documents())
def test_config_trees_of_any_shape_parse_or_refuse_in_one_line(data: dict[str, Any]) -> None:
    parses_or_refuses_in_one_line(toml_document(data))


@fuzz_settings(150)
@given(st.text(max_size=300))
def test_random_text_parses_or_refuses_in_one_line(text: str) -> None:
    parses_or_refuses_in_one_line(text)


@fuzz_settings(150)
@given(st.data())
def test_the_demo_config_mutated_parses_or_refuses_in_one_line(data: st.DataObject) -> None:
    text = DEFAULT
    for _ in range(data.draw(st.integers(1, 4))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 40)))
        action = data.draw(st.sampled_from(["cut", "double", "replace"]))
        if action == "cut":
            text = text[:start] + text[end:]
        elif action == "double":
            text = text[:end] + text[start:end] + text[end:]
        else:
            text = text[:start] + data.draw(st.text(max_size=10)) + text[end:]
    parses_or_refuses_in_one_line(text)


@fuzz_settings(150)
@given(tables())
def test_attach_specs_validate_or_refuse_in_one_line(spec: dict[str, Any]) -> None:
    try:
        child_spec_from_dict(spec)
    except ConfigError as exc:
        problem = str(exc)
    else:
        return
    assert "\n" not in problem


def test_a_file_that_is_not_utf8_or_not_readable_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[supervisor]\nname = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))
