"""systemd/foundation.service passes ``systemd-analyze verify`` (skipped, with the reason, where it is not installed).

verify checks that ExecStart's and ExecReload's binaries exist. The shipped unit names /opt/foundation/venv/bin/,
where systemd/README.md installs Foundation, which is usually absent on a development machine; so the test verifies
a temporary copy whose ExecStart and ExecReload name this environment's foundationd and foundationctl instead.
Every other line is the shipped file's.
The unit's behaviour under a real systemd is ``make test-systemd`` (tests/systemd/run.sh, root only).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "foundation.service"
INSTALLED_FOUNDATIOND = "/opt/foundation/venv/bin/foundationd"


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd); the unit cannot be verified here")
    return path


def _foundationd() -> str:
    beside = Path(sys.executable).parent / "foundationd"
    if beside.exists():
        return str(beside)
    found = shutil.which("foundationd")
    if found is None:
        pytest.skip("no foundationd installed to point the copy's ExecStart at (make test installs it)")
    return found


def _copy_for_verify(tmp_path: Path, extra: str = "") -> Path:
    """The shipped unit with ExecStart's binary replaced by one that exists here (and ``extra`` appended)."""
    lines = UNIT.read_text().splitlines(keepends=True)
    execs = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    assert len(execs) == 1, "the unit has exactly one ExecStart="
    assert lines[execs[0]].startswith(f"ExecStart={INSTALLED_FOUNDATIOND} "), lines[execs[0]]
    lines[execs[0]] = lines[execs[0]].replace(INSTALLED_FOUNDATIOND, _foundationd(), 1)
    installed_bin, here_bin = str(Path(INSTALLED_FOUNDATIOND).parent), str(Path(_foundationd()).parent)
    reloads = [i for i, line in enumerate(lines) if line.startswith("ExecReload=")]
    assert len(reloads) == 1, "the unit has exactly one ExecReload="
    lines[reloads[0]] = lines[reloads[0]].replace(installed_bin, here_bin, 1)
    copy = tmp_path / UNIT.name  # the same name: verify derives the unit's name and type from it
    copy.write_text("".join(lines) + extra)
    return copy


def _verify(unit: Path) -> tuple[int, list[str]]:
    """verify's exit status, and every line of its output about this unit (warnings exit 0 too)."""
    command = [_analyze(), "verify", str(unit)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in output if UNIT.name in line]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    code, complaints = _verify(_copy_for_verify(tmp_path))
    assert code == 0
    assert complaints == []


def test_verify_check_catches_a_bad_setting(tmp_path: Path) -> None:
    """The check has teeth: an unknown key is only a warning (exit 0), and the test still sees it."""
    _, complaints = _verify(_copy_for_verify(tmp_path, "NoSuchSetting=1\n"))
    assert any("NoSuchSetting" in line for line in complaints), complaints
