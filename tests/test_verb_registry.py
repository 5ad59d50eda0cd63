"""One registry of control verbs (daemon/control/verbs): the server's handlers and permissions, foundationctl's
parser and docs/protocol.md's verb list all agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.control import cli
from daemon.control.verbs import QUIET_VERBS, READ_VERBS, VERBS

PROTOCOL = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def documented() -> dict[str, bool]:
    """Each ``### `verb``` heading of section 4, and whether it says read-only."""
    section = PROTOCOL.read_text().split("## 4. Verbs", 1)[1].split("\n## 5.", 1)[0]
    return {m.group(1): bool(m.group(2)) for m in re.finditer(r"^### `([a-z_-]+)`( \(read-only\))?", section, re.M)}


def test_docs_list_exactly_the_registered_verbs_with_their_permission() -> None:
    docs = documented()
    assert set(docs) == set(VERBS)
    for name, verb in VERBS.items():
        assert docs[name] == (verb.access == "read"), name


def test_every_module_of_the_package_is_registered() -> None:
    package = Path(cli.__file__).parent / "verbs"
    helpers = {"__init__", "base", "lifecycle"}
    modules = {p.stem for p in package.glob("*.py")} - helpers
    assert modules == set(VERBS)


def test_the_server_permissions_come_from_the_registry() -> None:
    assert {n for n, v in VERBS.items() if v.access == "read"} <= READ_VERBS
    assert {n for n, v in VERBS.items() if v.access == "quiet"} == QUIET_VERBS
    assert not (READ_VERBS & QUIET_VERBS)


@pytest.mark.parametrize("name", sorted(VERBS))
def test_foundationctl_parses_each_verb_from_its_module(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(cli.ParserExit) as exc:
        cli.parse_args([name, "--help"])
    assert exc.value.status == 0
    assert VERBS[name].help in capsys.readouterr().out
