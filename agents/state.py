"""Persisted agent state, as the SDK's users import it.

The store itself lives in :mod:`ipc.state_store`: its LMDB layout is a contract between the agent (the writer)
and the daemon (``foundationctl state`` reads it), like the wire format in :mod:`ipc.wire`, and ``daemon/`` may
not import ``agents/``.
"""

from ipc.state_store import FORMAT, MAX_READERS, StateError, StateStore, agent_state_path, fsync_dir

__all__ = ["FORMAT", "MAX_READERS", "StateError", "StateStore", "agent_state_path", "fsync_dir"]
