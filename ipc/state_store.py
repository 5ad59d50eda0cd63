"""Persisted agent state: one LMDB environment per agent, committed durably together with the mailbox position.

::

    agent process (opens the store itself, after exec)      <state_dir>/agents/<name>/
    ┌─────────────────────────────────────┐                  ┌─────────────────────────────────────────────┐
    │ state, seq = store.load()           │  one read txn    │ data.mdb  main db:                          │
    │ for msg in mailbox (seq > last_seq):│ <─────────────── │   b"state"    orjson(state)                 │
    │     state = handle(state, msg)      │                  │   b"last_seq" u64 big-endian                │
    │     store.commit(state, msg.seq)    │ ───────────────> │   b"format"   b"1"                          │
    │     ack(msg.seq)                    │  one write txn,  │ lock.mdb  reader table + writer mutex       │
    └─────────────────────────────────────┘  fdatasync'd     └─────────────────────────────────────────────┘

The state value and the sequence number of the last message whose effect it includes are written in *one* write
transaction, so after any crash the pair on disk is consistent: the runtime skips every message with a sequence
number up to ``last_seq`` and redelivers the rest, which gives the exactly-once effect of DESIGN section 3.5.
LMDB never overwrites a committed page (copy-on-write, then an atomic meta-page switch), so a writer killed with
SIGKILL at any instant leaves the previous commit intact; ``sync=True, metasync=True`` make ``commit`` return only
after the data and the meta page are on disk.

Why one environment per agent (and not one shared environment with a named db per agent): each agent then has its
own writer mutex and its own fsyncs, so agents committing at the same time do not queue behind each other; a
crashed agent cannot leave a lock or a stale reader that another agent trips on; and deleting an agent's state is
``rm -r`` of one directory. ``bench/state_commit.py`` measures both layouts; ``docs/state.md`` has the numbers.

LMDB rules kept here and nowhere else (STYLE item 11):

* open in the process that uses the store, never before a fork; a store used in a forked child raises StateError;
* ``reader_check()`` right after opening clears reader slots left by a killed previous incarnation;
* every transaction is a ``with env.begin(...)`` block, write transactions hold three puts per state (one agent's,
  or a workflow host's and its side states), and values are copied out (``bytes``) before the transaction ends;
* one ``StateStore`` per environment per process (py-lmdb refuses a second open, which would break LMDB's locks).

Errors: every failure surfaces as :class:`StateError` with a stable ``code`` (see its docstring); the LMDB or orjson
exception rides along as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import lmdb
import orjson

__all__ = ["FORMAT", "MAX_READERS", "SHARED_PREFIXES", "SharedStateStore", "StateError", "StateStore",
           "agent_state_path", "fsync_dir", "open_agent_store", "shared_store_path"]

FORMAT = b"1"
"""Value of the b"format" key: the layout of this module's keys. Bumped only with a migration."""

MAX_READERS = 16
"""Reader slots in the lock file: the agent's own (one at a time) plus inspectors (``foundationctl state``) plus
slots left by killed incarnations until the next ``reader_check()``. Small keeps the lock file and scans tiny."""

_KEY_STATE = b"state"
_KEY_SEQ = b"last_seq"
_KEY_FORMAT = b"format"
_KEY_MIGRATIONS = b"migrations"  # the state migrations applied, in order (ipc/state_migration.py); absent: none
_SEQ_BYTES = 8
_MAX_SEQ = (1 << 64) - 1
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MAX_RESIZED_RETRIES = 3


class StateError(Exception):
    """A state store operation failed; nothing was changed on disk unless the message says so.

    ``code`` is one of:

    * ``"closed"`` — the store was closed;
    * ``"wrong_process"`` — the store was opened in another process (it crossed a fork);
    * ``"invalid"`` — bad argument: ``None`` as state (reserved for "never committed") or ``last_seq`` outside
      0..2**64-1;
    * ``"not_serialisable"`` — orjson cannot encode the state (the message names the type);
    * ``"map_full"`` — the encoded state does not fit even at ``max_map_size``;
    * ``"corrupt"`` — the stored keys are missing, malformed or not JSON;
    * ``"format"`` — the store was written by a newer format;
    * ``"lmdb"`` — any other LMDB failure (open, I/O, lock).

    ``category`` and ``context`` place it in the one error shape (ipc/errors.py ``classify``).
    """

    def __init__(self, message: str, *, code: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.path = path
        self.category = ("validation" if code in ("invalid", "not_serialisable") else
                         "internal" if code in ("closed", "wrong_process", "format") else "infrastructure")
        self.context = {"path": path} if path is not None else {}


def agent_state_path(state_dir: str | os.PathLike[str], name: str) -> Path:
    """The environment directory of agent ``name``: ``<state_dir>/agents/<name>``."""
    if not name or name in {".", ".."} or "/" in name or "\0" in name:
        raise ValueError(f"agent name {name!r} cannot be a directory name")
    return Path(state_dir) / "agents" / name


def _round_up_to_page(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries durable (a new file or subdirectory in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    """One agent's persisted state: its JSON-serialisable state value plus the mailbox sequence number of the
    last message whose effect that state includes, committed together in one LMDB write transaction.

    ``path`` is the environment directory (created, mode 0700); ``map_size`` the initial map, grown by doubling on
    demand up to ``max_map_size``. Not thread-safe: one thread of one process uses a store.
    """

    _OPEN_FLAGS: ClassVar[dict[str, Any]] = {
        "subdir": True,
        "create": True,
        "mode": 0o700,  # directory 0700, data.mdb and lock.mdb 0600: state may hold secrets
        "sync": True,  # fdatasync the data pages before the meta page is written ...
        "metasync": True,  # ... and the meta page itself: commit() returns only once both are on disk
        "lock": True,
        "writemap": False,  # pages are written with pwrite; a stray pointer cannot scribble on the map
        "max_readers": MAX_READERS,
        "max_dbs": 0,  # the main db holds the three keys
        "max_spare_txns": 0,
    }

    _keys: tuple[bytes, bytes, bytes] = (_KEY_STATE, _KEY_SEQ, _KEY_FORMAT)

    def __init__(self, path: str | os.PathLike[str], map_size: int = 16 << 20, max_map_size: int = 4 << 30) -> None:
        if map_size <= 0 or max_map_size <= 0:
            raise ValueError("map_size and max_map_size must be positive")
        if max_map_size < map_size:
            raise ValueError(f"max_map_size ({max_map_size}) is smaller than map_size ({map_size})")
        self._path = os.fspath(path)
        self._max_map_size = _round_up_to_page(max_map_size)
        self._pid = os.getpid()
        self._env: lmdb.Environment | None = None
        try:
            os.makedirs(self._path, mode=0o700, exist_ok=True)
            fresh = not os.path.exists(os.path.join(self._path, "data.mdb"))
            env = lmdb.open(self._path, map_size=_round_up_to_page(map_size), **self._OPEN_FLAGS)
        except (OSError, lmdb.Error) as exc:
            raise StateError(f"cannot open state store {self._path}: {exc}", code="lmdb", path=self._path) from exc
        try:
            # Slots of readers whose process is gone (a SIGKILLed previous incarnation). LMDB resets the whole
            # table when no other process has the environment open, so this matters when an inspector (the
            # daemon, foundationctl state) kept it open across the crash.
            self.stale_readers_cleared: int = env.reader_check()
        except (OSError, lmdb.Error) as exc:
            env.close()
            raise StateError(f"cannot open state store {self._path}: {exc}", code="lmdb", path=self._path) from exc
        self._env = env
        # A commit's fdatasync makes data.mdb's contents durable, not its directory entry: the first write syncs the
        # directories too, before it returns. Not here: until something is committed, losing a fresh data.mdb in a
        # crash loses nothing, and an agent's first start (500 of them at a cold boot) skips two fsyncs (~1-4 ms).
        self._dirs_unsynced = fresh

    def _sync_dirs_once(self) -> None:
        if not self._dirs_unsynced:
            return
        try:
            fsync_dir(self._path)
            with contextlib.suppress(PermissionError):  # an agent with user= cannot read <state>/agents (0711):
                fsync_dir(os.path.dirname(os.path.abspath(self._path)))  # foundationd made and synced its dir
        except OSError as exc:
            raise StateError(f"cannot sync the directory of {self._path}: {exc}", code="lmdb",
                             path=self._path) from exc
        self._dirs_unsynced = False

    # ---- public API ----

    @property
    def path(self) -> str:
        return self._path

    @property
    def map_size(self) -> int:
        """The current size of the memory map in bytes (grows on demand up to ``max_map_size``)."""
        env = self._usable()
        return int(env.info()["map_size"])

    def load(self) -> tuple[Any | None, int]:
        """``(state, last_seq)`` as last committed; ``(None, 0)`` if nothing was ever committed."""
        env = self._usable()
        for _ in range(_MAX_RESIZED_RETRIES):
            try:
                with env.begin() as txn:
                    # buffers=False (the default): get() returns bytes copied out of the map.
                    key_state, key_seq, key_format = self._keys
                    raw_state = txn.get(key_state)
                    raw_seq = txn.get(key_seq)
                    raw_format = txn.get(key_format)
                break
            except lmdb.MapResizedError:
                # Another process grew the map past ours (an agent's store read by an inspector): adopt its size.
                self._adopt_map_size(env)
            except lmdb.Error as exc:
                raise self._lmdb_error("load", exc) from exc
        else:
            raise StateError(f"load from {self._path} failed: the map kept being resized", code="lmdb",
                             path=self._path)
        return self._decode(raw_state, raw_seq, raw_format)

    def migrations(self) -> list[dict[str, Any]]:
        """The state migrations applied to the stored state, oldest first (``[]``: none ever)."""
        env = self._usable()
        try:
            with env.begin() as txn:
                raw = txn.get(self._migrations_key())
        except lmdb.Error as exc:
            raise self._lmdb_error("load", exc) from exc
        try:
            value = orjson.loads(raw) if raw is not None else []
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{self._path}: the migrations record is not JSON", code="corrupt",
                             path=self._path) from exc
        if not isinstance(value, list):
            raise StateError(f"{self._path}: the migrations record is not a list", code="corrupt", path=self._path)
        return value

    def _migrations_key(self) -> bytes:
        return self._keys[0][: -len(_KEY_STATE)] + _KEY_MIGRATIONS

    def commit(self, state: Any, last_seq: int, migrations: list[dict[str, Any]] | None = None,
               side: dict[str, Any] | None = None) -> None:
        """Replace the stored state and last_seq in one write transaction; durable (fsync'd) when it returns.
        ``migrations`` (a state migration's commit) replaces the list of applied state migrations in the same
        transaction.

        ``side``: states of other agents of a shared environment, written in the same transaction (a workflow host
        commits the records of the workflows it runs with its own mailbox position); only a shared store has them.
        On failure (StateError) the previously committed pair is left untouched.
        """
        env = self._usable()
        if state is None:
            raise StateError("state None is reserved for 'never committed'; commit a value such as {}",
                             code="invalid", path=self._path)
        if type(last_seq) is not int or not 0 <= last_seq <= _MAX_SEQ:
            raise StateError(f"last_seq must be an int in 0..2**64-1, not {last_seq!r}", code="invalid",
                             path=self._path)
        try:
            payload = orjson.dumps(state)
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError; its message names the type
            raise StateError(f"state is not JSON-serialisable: {exc}", code="not_serialisable",
                             path=self._path) from exc
        seq = last_seq.to_bytes(_SEQ_BYTES, "big")
        writes = [(self._keys, payload, seq)]
        if side:
            writes.extend(self._side_writes(side))
        resized = 0
        while True:
            try:
                with env.begin(write=True) as txn:
                    for (key_state, key_seq, key_format), value, position in writes:
                        txn.put(key_state, value)
                        txn.put(key_seq, position)
                        txn.put(key_format, FORMAT)
                    if migrations is not None:
                        txn.put(self._migrations_key(), orjson.dumps(migrations))
                self._sync_dirs_once()
                return
            except lmdb.MapFullError as exc:
                # The transaction was aborted by the with-block; grow the map and retry once per growth.
                self._grow(env, len(payload), exc)
            except lmdb.MapResizedError as exc:
                resized += 1
                if resized > _MAX_RESIZED_RETRIES:
                    raise self._lmdb_error("commit", exc) from exc
                self._adopt_map_size(env)
            except lmdb.Error as exc:
                raise self._lmdb_error("commit", exc) from exc

    def _side_writes(self, side: dict[str, Any]) -> list[tuple[tuple[bytes, bytes, bytes], bytes, bytes]]:
        raise StateError(f"state store {self._path} holds one agent's state: no side states", code="invalid",
                         path=self._path)

    def close(self) -> None:
        """Close the environment. Idempotent. In a forked child it only drops the parent's handle: closing it
        there would clear the parent's reader slots."""
        env, self._env = self._env, None
        if env is not None and os.getpid() == self._pid:
            env.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        status = "open" if self._env is not None else "closed"
        return f"<StateStore {self._path!r} {status}>"

    # ---- internals ----

    def _usable(self) -> lmdb.Environment:
        if self._env is None:
            raise StateError(f"state store {self._path} is closed", code="closed", path=self._path)
        if os.getpid() != self._pid:
            raise StateError(
                f"state store {self._path} was opened in process {self._pid} and used in {os.getpid()}; "
                "open the store in the process that uses it, after fork", code="wrong_process", path=self._path)
        return self._env

    def _grow(self, env: lmdb.Environment, payload_size: int, cause: lmdb.MapFullError) -> None:
        current = int(env.info()["map_size"])
        if current >= self._max_map_size:
            raise StateError(
                f"state of {payload_size} bytes does not fit in state store {self._path}: the map is at its cap "
                f"of {self._max_map_size} bytes (max_map_size)", code="map_full", path=self._path) from cause
        # A value is rewritten copy-on-write, so old and new copies coexist until the commit: aim for twice the
        # payload on top of what is in use, and double until there, so one retry usually suffices.
        info, psize = env.info(), env.stat()["psize"]
        in_use = (int(info["last_pgno"]) + 1) * psize  # the file's high-water mark
        target = current * 2
        while target < in_use + 2 * payload_size + (64 << 10):
            target *= 2
        try:
            env.set_mapsize(min(target, self._max_map_size))
            grown = int(env.info()["map_size"])
        except lmdb.Error as exc:
            raise self._lmdb_error("grow the map of", exc) from exc
        if grown <= current:  # never loop on a map that does not grow
            raise StateError(f"could not grow the map of state store {self._path} beyond {current} bytes",
                             code="map_full", path=self._path) from cause

    def _adopt_map_size(self, env: lmdb.Environment) -> None:
        try:
            env.set_mapsize(0)
        except lmdb.Error as exc:
            raise self._lmdb_error("adopt the map size of", exc) from exc

    def _lmdb_error(self, action: str, exc: lmdb.Error) -> StateError:
        return StateError(f"{action} state store {self._path} failed: {exc}", code="lmdb", path=self._path)

    def _decode(self, raw_state: bytes | None, raw_seq: bytes | None,
                raw_format: bytes | None) -> tuple[Any | None, int]:
        if raw_format is not None and raw_format != FORMAT:
            raise StateError(f"state store {self._path} has format {raw_format!r}; this version reads {FORMAT!r}",
                             code="format", path=self._path)
        if raw_state is None and raw_seq is None:
            return None, 0
        if raw_state is None or raw_seq is None:
            missing = "state" if raw_state is None else "last_seq"
            raise StateError(f"state store {self._path} is corrupt: key {missing!r} is missing", code="corrupt",
                             path=self._path)
        if len(raw_seq) != _SEQ_BYTES:
            raise StateError(f"state store {self._path} is corrupt: last_seq is {len(raw_seq)} bytes, not 8",
                             code="corrupt", path=self._path)
        try:
            state = orjson.loads(raw_state)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"state store {self._path} is corrupt: the state is not JSON: {exc}", code="corrupt",
                             path=self._path) from exc
        return state, int.from_bytes(raw_seq, "big")


SHARED_PREFIXES = {"workflow-": "workflows", "wfhost-": "workflows"}
"""Agents whose name starts with one of these keep their state as keys of one shared environment,
``<state_dir>/<environment>``, instead of an environment of their own: short-lived agents started by the thousand (a
workflow's process) would otherwise pay for creating an environment and two directory fsyncs at each start, and
``workflow list`` would open one environment per workflow. A workflow host (``wfhost-K``) keeps its own state there
too, so that it commits the records of the workflows it runs (side states) in its own transactions."""


def shared_store_path(state_dir: str | os.PathLike[str], name: str) -> Path | None:
    """The shared environment agent ``name`` keeps its state in, or None when it has its own."""
    for prefix, env in SHARED_PREFIXES.items():
        if name.startswith(prefix):
            return Path(state_dir) / env
    return None


class SharedStateStore(StateStore):
    """One agent's state as three keys (``NAME\0state``, ``NAME\0last_seq``, ``NAME\0format``) of an environment
    shared with others of its kind: the same commit (one write transaction, fsync'd) and the same load. Writers of
    a shared environment queue on its one writer lock; each holds it for one small transaction. An inspector (the
    daemon, the coordinator) opens it with no name and reads any agent's keys with ``load_of`` and ``names``."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None, map_size: int = 64 << 20,
                 max_map_size: int = 16 << 30) -> None:
        if name is not None:
            self._keys = _shared_keys(name)
        self.name = name
        super().__init__(path, map_size, max_map_size)

    def load_of(self, name: str) -> tuple[Any | None, int]:
        """``load`` of another agent's keys in this environment."""
        mine = self._keys
        self._keys = _shared_keys(name)
        try:
            return self.load()
        finally:
            self._keys = mine

    def names(self) -> list[str]:
        """Every agent with a state in this environment."""
        env = self._usable()
        suffix = b"\0" + _KEY_STATE
        with env.begin() as txn:
            return [bytes(k)[: -len(suffix)].decode() for k in txn.cursor().iternext(values=False)
                    if bytes(k).endswith(suffix)]

    def _side_writes(self, side: dict[str, Any]) -> list[tuple[tuple[bytes, bytes, bytes], bytes, bytes]]:
        out = []
        for name, value in side.items():
            if value is None:
                raise StateError(f"side state of {name!r} is None", code="invalid", path=self._path)
            try:
                out.append((_shared_keys(name), orjson.dumps(value), bytes(_SEQ_BYTES)))
            except TypeError as exc:
                raise StateError(f"side state of {name!r} is not JSON-serialisable: {exc}", code="not_serialisable",
                                 path=self._path) from exc
        return out

    def delete_of(self, name: str) -> None:
        """Forget an agent's state (its record is no longer wanted)."""
        env = self._usable()
        with env.begin(write=True) as txn:
            for key in (*_shared_keys(name), name.encode() + b"\0" + _KEY_MIGRATIONS):
                txn.delete(key)


def _shared_keys(name: str) -> tuple[bytes, bytes, bytes]:
    if not name or "\0" in name:
        raise ValueError(f"agent name {name!r} cannot be a key")
    key = name.encode() + b"\0"
    return key + _KEY_STATE, key + _KEY_SEQ, key + _KEY_FORMAT


def open_agent_store(state_dir: str | os.PathLike[str], name: str) -> StateStore:
    """The store agent ``name`` keeps its state in: its own environment, or its kind's shared one."""
    shared = shared_store_path(state_dir, name)
    if shared is not None:
        return SharedStateStore(shared, name)
    return StateStore(agent_state_path(state_dir, name))
