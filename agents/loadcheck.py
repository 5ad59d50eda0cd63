"""Can ``module:Class`` be loaded as an agent? Run in a child process, never in the daemon (importing user code
runs it): ``python -m agents.loadcheck MODULE:CLASS`` exits 0, or 1 with the one-line cause on stderr.

``foundationd --check`` runs it once per agent of the config, in the agent's working directory and environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agents.sdk import AgentLoadError, load_agent_class


def check_agent_importable(target: str, working_dir: str | os.PathLike[str] | None = None,
                           env: dict[str, str] | None = None, timeout: float = 30.0) -> str | None:
    """None if ``target`` loads as an Agent class in a fresh interpreter run in ``working_dir``, else why not."""
    try:
        out = subprocess.run([sys.executable, "-m", "agents.loadcheck", target], cwd=working_dir, env=env,
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"importing {target} took more than {timeout:g}s"
    except OSError as exc:
        return f"cannot run the check in {working_dir}: {exc.strerror or exc}"
    if out.returncode == 0:
        return None
    lines = out.stderr.strip().splitlines()
    return lines[-1] if lines else f"the check exited with status {out.returncode}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m agents.loadcheck MODULE:CLASS", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path.cwd()))  # as the agent runtime sees it: its working directory first
    try:
        load_agent_class(args[0])
    except AgentLoadError as exc:
        print(f"{args[0]}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the module itself failed while being imported
        print(f"{args[0]}: importing it raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
