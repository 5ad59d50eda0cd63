"""``foundationd``'s entry point: arguments, directories, the locks, logging; then the app (daemon/app.py) runs.

Exit codes (DESIGN 3.1): 0 after SIGTERM or ``shutdown``, 2 on an invalid config, non-zero when the root
supervisor's restart intensity is exceeded.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import fcntl
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

from daemon import paths, version
from daemon.app import App
from daemon.config import ConfigError, DaemonConfig, load_config
from daemon.core.logfiles import target_of
from daemon.core.spec import WorkerSpec, worker_specs
from daemon.shell.output import OutputSink, SinkHandler, stderr_is_journal
from daemon.shell.process import SpawnError, resolve_program

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


# ---- entry point ----


def _prepare_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if path.stat().st_uid == os.getuid():
        path.chmod(mode)


def _lock(directory: Path, what: str) -> int:
    """One daemon per runtime directory (a second would steal the control socket) and per state directory (two
    brokers on one outbox, two counters on one agent's state). flock: released by the kernel when we die."""
    fd = os.open(directory / "foundationd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        message = f"foundationd: another foundationd (pid {holder}) is running with {what} {directory}"
        raise SystemExit(message) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _raise_fd_limit() -> None:
    # Each worker holds a pidfd, two output pipes and maybe a log file; the default soft limit of 1024 caps a fleet
    # at ~250.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def _setup_logging() -> tuple[OutputSink, OutputSink]:
    """Both outputs go through non-blocking sinks: a reader that stalls must not stall the loop."""
    out, err = OutputSink(sys.stdout.fileno()), OutputSink(sys.stderr.fileno())
    journal = stderr_is_journal()
    handler = SinkHandler(err, journal)
    handler.setFormatter(logging.Formatter("%(message)s" if journal else "foundationd: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    _lighter_log_records()
    return out, err


def _lighter_log_records() -> None:
    """Every child started or stopped is a log line (500 at a cold start of 500). A record looks up its thread,
    process, multiprocessing process and calling frame, about a fifth of its cost, and no format here shows any
    of them: the switches of the logging HOWTO's "Optimization" section turn the lookups off."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the documented switch for the caller lookup




def check(config: DaemonConfig) -> int:
    """``foundationd --check``, as ``nginx -t``: the config parsed (else exit 2 before this), each worker's working
    directory and program found, each agent's ``module:Class`` loaded in a child interpreter (user code never runs
    in the daemon); every problem printed, one line each, naming the child."""
    workers = worker_specs(config.root)
    problems = [f"{w.name}: {why}" for w in workers if (why := _startable(w) or _loggable(w, config)) is not None]
    for line in problems:
        print(f"foundationd: {config.source}: {line}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print(f"config ok: {config.source}: {len(workers)} children")
    return EXIT_OK


def _loggable(spec: WorkerSpec, config: DaemonConfig) -> str | None:
    """Why foundationd could not write ``spec``'s log file (it creates missing directories), or None."""
    target = target_of(spec, config.logs)
    if target is None:
        return None
    path = Path(target.path)
    if path.exists():
        ok = path.is_file() and os.access(path, os.W_OK)
        return None if ok else f"log file {path}: not a regular file foundationd can write"
    parent = next(p for p in path.parents if p.exists())
    if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        return f"log file {path}: cannot be created in {parent}"
    return None


def _startable(spec: WorkerSpec) -> str | None:
    if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
        return f"working_dir {spec.working_dir}: not a directory"
    if not spec.agent:
        try:
            resolve_program(spec.command[0], spec)  # what a spawn checks first, in the same words
        except SpawnError as exc:
            return str(exc)
        return None
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")} | dict(spec.env)
    try:  # agents.loadcheck by name: daemon/ does not import agents/
        out = subprocess.run([sys.executable, "-m", "agents.loadcheck", spec.agent], cwd=spec.working_dir,
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return f"importing {spec.agent} took more than 60s"
    lines = out.stderr.strip().splitlines()
    return None if out.returncode == 0 else lines[-1] if lines else f"check exited with status {out.returncode}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="foundationd", description="Foundation's supervision daemon.")
    parser.add_argument("--config", help="TOML config (default: the embedded demo tree)")
    parser.add_argument("--runtime-dir", help="directory for the control socket")
    parser.add_argument("--state-dir", help="directory for persistent state")
    parser.add_argument("--check", action="store_true",
                        help="validate the config (and that each agent's module:Class loads), start nothing")
    parser.add_argument("--version", action="version", version="foundationd " + version())
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # A wedged loop killed by systemd's watchdog (SIGABRT) leaves its Python traceback in the journal.
    faulthandler.enable()
    args = parse_args(argv)
    sinks = _setup_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"foundationd: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        return check(config)
    runtime_dir = paths.runtime_dir(args.runtime_dir, config.runtime_dir)
    state_dir = paths.state_dir(args.state_dir, config.state_dir)
    try:
        _prepare_dir(runtime_dir, 0o700)
        _prepare_dir(state_dir, 0o700)
    except OSError as exc:
        print(f"foundationd: cannot prepare directories: {exc}", file=sys.stderr)
        return EXIT_FAILED
    locks = [_lock(runtime_dir, "runtime dir")]
    try:
        if state_dir.resolve() != runtime_dir.resolve():
            locks.append(_lock(state_dir, "state dir"))
    except SystemExit:
        os.close(locks[0])
        raise
    _raise_fd_limit()
    try:
        return App(config, runtime_dir, state_dir, sinks, config_path=args.config).run()
    finally:
        for fd in locks:
            os.close(fd)


if __name__ == "__main__":
    raise SystemExit(main())
