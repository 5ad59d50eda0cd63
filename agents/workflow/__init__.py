"""Durable workflows (DESIGN 3.6): definitions run by a workflow process, steps by task agents and the daemon.

``engine`` decides (pure), ``process`` is the workflow's own agent process, ``errors`` the exceptions a ``python``
step raises to say whether it deserves a retry, ``client`` the small control-socket client the built-in agents use,
``build`` and ``api`` the Python way to write and start workflows (docs/workflows.md).
"""

from agents.workflow.api import Workflows
from agents.workflow.build import call, command, parallel, python, sequential, task
from ipc.workflow_def import DefinitionError

__all__ = ["DefinitionError", "Workflows", "call", "command", "parallel", "python", "sequential", "task"]
