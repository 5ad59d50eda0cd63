"""The package build, plus one native step: compile foundation-exec (daemon/native/) into the package.

Everything else is declared in pyproject.toml. This file exists so that ``pip install .`` (and ``pip install -e .``)
give the fast spawn path without make: build_py compiles the helper into ``daemon/shell/bin/foundation-exec``,
where ``daemon.shell.process.find_exec_helper`` looks first. In an editable install it is compiled in place (the
source tree is what gets imported), in a regular one into the build directory that becomes the wheel.

The compiler attempts are the Makefile's: freestanding and static (no libc start-up, ~0.3 ms less per child start,
x86-64 only), then static on libc, then dynamic. Without a working C compiler the build still succeeds: foundationd
then spawns through util-linux setpriv and says so in its log and in ``foundationctl status``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

SOURCE = Path("daemon/native/foundation-exec.c")
TARGET = Path("daemon/shell/bin/foundation-exec")  # relative to the package root (build_lib, or the source tree)
ATTEMPTS = (
    ["-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector", "-DFOUNDATION_EXEC_FREESTANDING"],
    ["-O2", "-static"],
    ["-O2"],
)


def compile_helper(source: Path, output: Path) -> str | None:
    """Build ``output`` from ``source`` with the first attempt that works; the flags used, or None without one."""
    compiler = shlex.split(os.environ.get("CC", "cc"))
    output.parent.mkdir(parents=True, exist_ok=True)
    for flags in ATTEMPTS:
        try:
            result = subprocess.run([*compiler, *flags, "-o", str(output), str(source)], capture_output=True,
                                    check=False, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            break  # no compiler at all: no point in the other flags
        if result.returncode == 0:
            output.chmod(0o755)
            return " ".join(flags)
    output.unlink(missing_ok=True)
    return None


class BuildWithHelper(build_py):
    """build_py that also compiles foundation-exec next to the package's Python code."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        target = root / TARGET if self.editable_mode else Path(self.build_lib) / TARGET
        flags = compile_helper(root / SOURCE, target)
        if flags is None:
            self.announce("note: no working C compiler; foundationd will spawn through setpriv "
                          "(about 1 ms slower per start)", level=3)
        else:
            self.announce(f"built {target} ({flags})", level=3)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        built = Path(self.build_lib) / TARGET
        if not self.editable_mode and built.exists():
            outputs.append(str(built))
        return outputs


class BinaryDistribution(Distribution):
    """The wheel holds a native executable: tag it for this platform, not as pure Python."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithHelper}, distclass=BinaryDistribution)
