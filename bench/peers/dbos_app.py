"""The DBOS side of bench/workflow_peers.py, run in a process of its own against the PostgreSQL it started.

    python bench/peers/dbos_app.py --url postgresql://postgres@127.0.0.1:PORT/dbos_bench --runs 200

Workflows of one and of three no-op ``@DBOS.step()`` steps, with DBOS's defaults (its own system database on that
server; each step's output and the workflow's status are committed to PostgreSQL before it goes on). End to end
is ``DBOS.start_workflow(wf)`` to ``handle.get_result()``, as an application starting a durable workflow and
waiting for it would. Prints one JSON object (seconds) on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from dbos import DBOS, DBOSConfig
from sqlalchemy import create_engine, text  # a dependency of dbos


@DBOS.step()
def noop() -> None:
    return None


@DBOS.workflow()
def wf1() -> str:
    noop()
    return "ok"


@DBOS.workflow()
def wf3() -> str:
    noop()
    noop()
    noop()
    return "ok"


def timed(workflow, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        result = DBOS.start_workflow(workflow).get_result()
        samples.append(time.perf_counter() - t0)
        if result != "ok":
            raise RuntimeError(f"unexpected workflow result {result!r}")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=1000)
    args = parser.parse_args()

    config: DBOSConfig = {"name": "foundation-bench", "system_database_url": args.url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    try:
        engine = create_engine(args.url)
        with engine.connect() as conn:
            settings = {name: conn.execute(text(f"SHOW {name}")).scalar()
                        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                                     "full_page_writes")}
        engine.dispose()

        timed(wf1, args.warmup)
        timed(wf3, args.warmup)
        # Interleaved, so that a slow patch of the machine falls on both shapes alike.
        wf1_s: list[float] = []
        wf3_s: list[float] = []
        for _ in range(args.runs):
            wf1_s += timed(wf1, 1)
            wf3_s += timed(wf3, 1)

        t0 = time.perf_counter()
        # One thread starting them: 8 or 32 starting threads were measured no faster (PostgreSQL's commits bound it).
        handles = [DBOS.start_workflow(wf3) for _ in range(args.concurrent)]
        started = time.perf_counter() - t0
        results = [h.get_result() for h in handles]
        wall = time.perf_counter() - t0
        if results.count("ok") != args.concurrent:
            raise RuntimeError("not every concurrent workflow returned 'ok'")

        out = {
            "wf1_s": wf1_s,
            "wf3_s": wf3_s,
            "concurrent_n": args.concurrent,
            "concurrent_s": wall,
            "concurrent_started_s": started,
            "dbos_version": _dist_version("dbos"),
            "postgres": settings,
        }
    finally:
        DBOS.destroy(destroy_registry=True)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
