"""Who a ``user=``/``group=`` child runs as, looked up once per spec, and whether that user can reach what it execs.

    spec (user, group, umask) ──Credentials.of──> cached Identity: Popen's user/group/extra_groups/umask + login env
    reload ──Credentials.clear()──> the next spawn looks the names up again (/etc/passwd or LDAP may have changed)
    exec chain of a user child ──unreachable()──> None, or the first path that user cannot traverse or execute

* The name service (pwd, grp, getgrouplist: files, but also LDAP or sssd through NSS) is asked once per distinct
  (user, group, umask), not at every spawn: a crash-looping child would otherwise query it at every restart, on
  the loop. The config loader already checked that the names existed; a name that is gone by spawn time is a
  SpawnError, and failures are not cached.
* Popen drops privileges before the first exec, so every program of the chain (the exec helper or setpriv, sh,
  prlimit, the command, a script's interpreter) is executed by the target user. A venv or a checkout under a
  0700 directory (/root, a home) cannot be reached by ``nobody``: the exec would fail in the child, exit 127,
  and the child would crash-loop. ``unreachable`` says which path it is, before the fork. It reads the mode
  bits (owner, then group, then others, as the kernel does); ACLs and capabilities are not read, so it can only
  be too strict where an ACL grants more, never let an unreachable path through unnoticed.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any

from daemon.core.spec import WorkerSpec

X_OK_BITS, R_OK_BITS = 1, 4
MAX_SHEBANG = 256
MAX_INTERPRETERS = 4  # a script run by a script run by ...: the kernel allows 4 levels (BINPRM_MAX_RECURSION)


class SpawnError(Exception):
    """The command could not be started (not found, not executable, bad working directory)."""


@dataclass(frozen=True)
class Identity:
    """What Popen needs to start a child as its user, and the environment that user implies."""

    popen: dict[str, Any] = field(default_factory=dict)  # user, group, extra_groups, umask (Popen's arguments)
    env: dict[str, str] = field(default_factory=dict)  # HOME, USER, LOGNAME
    uid: int | None = None  # None: the child stays the daemon's user
    gids: frozenset[int] = frozenset()  # its primary and supplementary groups, for the permission checks


Key = tuple[str | None, str | None, int | None]


class Credentials:
    """The cache of identities, keyed by the spec values they come from."""

    def __init__(self) -> None:
        self._cache: dict[Key, Identity] = {}
        self.lookups = 0  # name-service lookups done (tests show that a restart does none)

    def of(self, spec: WorkerSpec) -> Identity:
        """The identity ``spec`` runs as; SpawnError if it needs root and the daemon is not, or a name is gone."""
        if spec.user is None and spec.group is None:
            return Identity({"umask": spec.umask} if spec.umask is not None else {})
        if os.geteuid() != 0:  # not cached: the daemon's uid is fixed, this is only the refusal
            setting = f'user = "{spec.user}"' if spec.user is not None else f'group = "{spec.group}"'
            raise SpawnError(f"{setting} needs foundationd to run as root (it runs as uid {os.geteuid()})")
        key = (spec.user, spec.group, spec.umask)
        identity = self._cache.get(key)
        if identity is None:
            identity = self._cache[key] = self._look_up(spec)
        return identity

    def clear(self) -> None:
        """Forget every lookup (at a reload): users, groups and group lists are read again at the next spawn."""
        self._cache.clear()

    def _look_up(self, spec: WorkerSpec) -> Identity:
        self.lookups += 1
        popen: dict[str, Any] = {}
        env: dict[str, str] = {}
        if spec.umask is not None:
            popen["umask"] = spec.umask
        gid = None
        if spec.group is not None:
            try:
                gid = grp.getgrgid(int(spec.group)).gr_gid if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
            except (KeyError, OverflowError):
                raise SpawnError(f'group = "{spec.group}": no such group on this system') from None
        uid = None
        gids: frozenset[int] = frozenset()
        if spec.user is not None:
            try:
                entry = pwd.getpwuid(int(spec.user)) if spec.user.isdigit() else pwd.getpwnam(spec.user)
            except (KeyError, OverflowError):
                raise SpawnError(f'user = "{spec.user}": no such user on this system') from None
            gid = entry.pw_gid if gid is None else gid
            # Popen does setgroups, then setgid, then setuid: the order that cannot leave a privilege behind.
            uid = popen["user"] = entry.pw_uid
            popen["extra_groups"] = os.getgrouplist(entry.pw_name, gid)
            gids = frozenset([gid, *popen["extra_groups"]])
            env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
        # With a group alone the child stays root: only its primary group changes, supplementary ones are kept.
        popen["group"] = gid
        return Identity(popen, env, uid, gids)


# ---- can that user reach it? ----


def _allowed(st: os.stat_result, uid: int, gids: frozenset[int], bits: int) -> bool:
    """The kernel's test for a non-root user: the owner's bits if it owns the file, else the group's, else others'."""
    if st.st_uid == uid:
        return bool(st.st_mode & (bits << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bits << 3))
    return bool(st.st_mode & bits)


def _blocked_directory(path: str, uid: int, gids: frozenset[int], base: str = "/") -> str | None:
    """The first directory on the way to ``path`` (from ``base``) that ``uid`` may not search, else None."""
    relative = os.path.relpath(os.path.dirname(path), base)
    current = base
    if not _searchable(current, uid, gids):
        return current
    for part in [] if relative == "." else relative.split(os.sep):
        current = os.path.join(current, part)
        if not _searchable(current, uid, gids):
            return current
    return None


def _searchable(directory: str, uid: int, gids: frozenset[int]) -> bool:
    try:
        st = os.stat(directory)
    except OSError:
        return True  # not ours to report: the exec itself says what is missing
    return not stat.S_ISDIR(st.st_mode) or _allowed(st, uid, gids, X_OK_BITS)


def unreachable(path: str, uid: int, gids: frozenset[int], cwd: str | None = None) -> str | None:
    """Why user ``uid`` (in ``gids``) could not exec ``path``, or None when it can.

    Both the path as named and its target (a venv's python is a link to the real interpreter) are walked; a
    script (``#!``) must also be readable, and its interpreter is checked the same way.
    """
    for _ in range(MAX_INTERPRETERS):
        absolute = os.path.join(cwd or os.getcwd(), path)
        base = (cwd or os.getcwd()) if not os.path.isabs(path) else "/"
        for named, start in ((absolute, base), (os.path.realpath(absolute), "/")):
            blocked = _blocked_directory(named, uid, gids, start)
            if blocked is not None:
                return f"{path}: uid {uid} may not enter {blocked} (search permission)"
        try:
            st = os.stat(absolute)
        except OSError:
            return None  # checked elsewhere, with its own message
        if not _allowed(st, uid, gids, X_OK_BITS):
            return f"{path}: uid {uid} may not execute it (mode {stat.filemode(st.st_mode)})"
        interpreter = _shebang(absolute)
        if interpreter is None:
            return None
        if not _allowed(st, uid, gids, R_OK_BITS):
            return f"{path}: uid {uid} may not read this script (mode {stat.filemode(st.st_mode)})"
        path, cwd = interpreter, None
    return None


def _shebang(path: str) -> str | None:
    """The interpreter a ``#!`` script names, or None for anything else (a binary, an unreadable file)."""
    try:
        with open(path, "rb") as file:
            head = file.read(MAX_SHEBANG)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None
