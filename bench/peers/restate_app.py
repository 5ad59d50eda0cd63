"""The Restate side of bench/workflow_peers.py: one service whose handlers are workflows of N no-op ``ctx.run`` steps.

Served by hypercorn (``python -m hypercorn restate_app:app``, from this directory) and registered with a
restate-server started by bench/workflow_peers.py; invoked over the HTTP ingress as ``POST /Bench/wf1`` and
``POST /Bench/wf3``. Each step is a journaled ``ctx.run`` (``run_typed``, the non-deprecated spelling of the same
Run entry): its (empty) result is recorded by the server, durably, before the handler goes on.
"""

from __future__ import annotations

import restate

bench = restate.Service("Bench")


def noop() -> None:
    return None


@bench.handler()
async def wf1(ctx: restate.Context) -> str:
    await ctx.run_typed("step1", noop)
    return "ok"


@bench.handler()
async def wf3(ctx: restate.Context) -> str:
    await ctx.run_typed("step1", noop)
    await ctx.run_typed("step2", noop)
    await ctx.run_typed("step3", noop)
    return "ok"


app = restate.app(services=[bench])
