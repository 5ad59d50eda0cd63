"""Users and limits: user/group/umask, resource limits and max_memory, from config keys to the child's /proc.

Parsing is checked on the config alone; the process shell's refusals on a ProcessShell; what a child really
gets (credentials, umask, rlimits, a restart past max_memory) with real daemons and /proc/PID/{status,limits}.
MemoryWatch is driven by hand (a fake call_later) against real memory hogs, so no test sleeps.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CHILDREN, shell

from agents.testing import wait_for
from daemon.config import ConfigError, child_spec_from_dict, parse_config
from daemon.core.spec import WorkerSpec
from daemon.shell.memory import MemoryWatch, group_rss
from daemon.shell.process import SpawnError

HOG = str(CHILDREN / "memory_hog.py")
MiB = 1 << 20
C0 = "supervisor.children[0]"

NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name  # "nogroup" on Debian, "nobody" elsewhere
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping privileges to nobody needs the daemon, hence the tests, to run as root"
)


def worker(extra: str, command: str = '["sleep", "1000"]', name: str = "w") -> str:
    return f'[[supervisor.children]]\nname = "{name}"\ncommand = {command}\n{extra}\n'


def parse_worker(extra: str) -> WorkerSpec:
    spec = parse_config(worker(extra), "t.toml").root.children[0]
    assert isinstance(spec, WorkerSpec)
    return spec


# ---- config: valid ----


def test_all_keys_become_the_spec_fields() -> None:
    spec = parse_worker(
        f"""
        user = "nobody"
        group = "{NOBODY_GROUP}"
        umask = "0027"
        max_memory = "50M"
        limits = {{ nofile = [256, 512], as = "1G", core = 0, cpu = "infinity", stack = ["8M", "infinity"] }}
        """.replace("\n        ", "\n")
    )
    assert (spec.user, spec.group, spec.umask, spec.max_memory) == ("nobody", NOBODY_GROUP, 0o027, 50 * MiB)
    assert spec.limits == (  # sorted by name; one value is soft = hard; -1 is infinity
        ("as", 1 << 30, 1 << 30),
        ("core", 0, 0),
        ("cpu", -1, -1),
        ("nofile", 256, 512),
        ("stack", 8 * MiB, -1),
    )


def test_defaults_change_nothing() -> None:
    spec = parse_worker("")
    assert (spec.user, spec.group, spec.umask, spec.limits, spec.max_memory) == (None, None, None, (), None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1234", 1234), ('"64K"', 64 << 10), ('"3M"', 3 * MiB), ('"2G"', 2 << 30), ('"1T"', 1 << 40), ('"77"', 77)],
)
def test_sizes(value: str, expected: int) -> None:
    spec = parse_worker(f"max_memory = {value}\nlimits = {{ fsize = {value}, memlock = [{value}, {value}] }}")
    assert spec.max_memory == expected
    assert spec.limits == (("fsize", expected, expected), ("memlock", expected, expected))


@pytest.mark.parametrize(("text", "mask"), [("0027", 0o027), ("022", 0o022), ("7", 0o007), ("0777", 0o777)])
def test_umask_is_a_string_of_octal_digits(text: str, mask: int) -> None:
    assert parse_worker(f'umask = "{text}"').umask == mask


def test_numeric_user_and_group_are_accepted_when_they_exist() -> None:
    spec = parse_worker(f'user = "{NOBODY.pw_uid}"\ngroup = "{NOBODY.pw_gid}"')
    assert (spec.user, spec.group) == (str(NOBODY.pw_uid), str(NOBODY.pw_gid))


def test_attach_validates_the_same_keys() -> None:
    spec = child_spec_from_dict({"name": "a", "command": ["x"], "limits": {"nofile": 64}, "umask": "077"})
    assert isinstance(spec, WorkerSpec)
    assert (spec.limits, spec.umask) == ((("nofile", 64, 64),), 0o077)
    with pytest.raises(ConfigError, match=r"spec\.user: no such user"):
        child_spec_from_dict({"name": "a", "command": ["x"], "user": "no-such-user-here"})


# ---- config: every mistake names its key ----

L = f"{C0}.limits"
ERRORS = [
    ('user = "no-such-user-here"', f"{C0}.user", 'no such user "no-such-user-here" on this system'),
    ('user = "4000000000"', f"{C0}.user", "no such user"),
    ("user = 0", f"{C0}.user", "expected a string, got integer 0"),
    ('user = ""', f"{C0}.user", "must not be empty"),
    ('group = "no-such-group-here"', f"{C0}.group", 'no such group "no-such-group-here"'),
    ("umask = 22", f"{C0}.umask", 'expected a string of octal digits like "0027", got integer 22'),
    ("umask = 0o22", f"{C0}.umask", "expected a string of octal digits"),
    ('umask = "0999"', f"{C0}.umask", 'octal digits from "0000" to "0777"'),
    ('umask = "1777"', f"{C0}.umask", 'octal digits from "0000" to "0777"'),
    ('umask = ""', f"{C0}.umask", "octal digits"),
    ("limits = 5", L, "expected a table of resource limits, got integer"),
    ("limits = { nofiles = 5 }", f"{L}.nofiles", "known: as, core, cpu, fsize, memlock, nofile, nproc, stack)"),
    ("limits = { rss = 5 }", f"{L}.rss", "unknown key"),
    ('limits = { nofile = "1G" }', f"{L}.nofile", 'expected an integer (a count) or "infinity", got string "1G"'),
    ("limits = { cpu = 1.5 }", f"{L}.cpu", 'expected an integer (seconds) or "infinity"'),
    ("limits = { nproc = -1 }", f"{L}.nproc", "must be between 0 and"),
    ("limits = { as = true }", f"{L}.as", "expected bytes"),
    ('limits = { as = "1X" }', f"{L}.as", 'like "512M"'),
    ('limits = { as = "1.5G" }', f"{L}.as", 'like "512M"'),
    ('limits = { as = "512m" }', f"{L}.as", 'like "512M"'),
    ('limits = { as = "9000000T" }', f"{L}.as", "must be between 0 and 9223372036854775807"),
    ('limits = { stack = "unlimited" }', f"{L}.stack", "expected bytes"),
    ("limits = { nofile = [1, 2, 3] }", f"{L}.nofile", "a [soft, hard] pair, got 3 items"),
    ("limits = { nofile = [512, 256] }", f"{L}.nofile", "soft limit must not exceed the hard limit, got [512, 256]"),
    ('limits = { nofile = ["infinity", 5] }', f"{L}.nofile", "soft limit must not exceed the hard limit"),
    ('limits = { nofile = [5, "x"] }', f"{L}.nofile[1]", "expected an integer"),
    ("max_memory = 0", f"{C0}.max_memory", "must be > 0"),
    ('max_memory = "infinity"', f"{C0}.max_memory", 'expected bytes (an integer, or a size like "512M")'),
    ("max_memory = 1.5", f"{C0}.max_memory", "expected bytes"),
    ('max_memory = "lots"', f"{C0}.max_memory", "expected bytes"),
]


@pytest.mark.parametrize(("extra", "key", "fragment"), ERRORS)
def test_errors_name_the_key(extra: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(worker(extra), "t.toml")
    assert info.value.key == key
    assert fragment in info.value.message
    assert "\n" not in str(info.value)


def test_user_keys_on_a_supervisor_are_refused() -> None:
    text = '[[supervisor.children]]\nname = "s"\nstrategy = "one_for_one"\nuser = "nobody"\n'
    with pytest.raises(ConfigError, match="a worker key, but strategy makes this child a supervisor"):
        parse_config(text, "t.toml")


# ---- the process shell ----


def test_plain_children_get_no_extra_exec_and_no_credentials() -> None:
    sh = shell()
    spec = WorkerSpec(name="w", command=("sleep", "1"))
    assert sh._credentials(spec) == ({}, {})
    assert not any("prlimit" in arg for arg in sh._argv(spec))


def test_limits_put_prlimit_right_before_the_command() -> None:
    spec = WorkerSpec(name="w", command=("sleep", "1"), limits=(("core", 0, 0), ("nofile", 256, -1)))
    argv = shell()._argv(spec)
    at = next(i for i, arg in enumerate(argv) if arg.endswith("/prlimit"))
    assert argv[at + 1:] == ["--core=0:0", "--nofile=256:unlimited", "--", argv[-2], "1"]
    assert argv[-2].endswith("/sleep")


def test_user_sets_groups_and_login_environment() -> None:
    sh = shell()
    spec = WorkerSpec(name="w", command=("sleep", "1"), user="nobody", umask=0o027, env=(("HOME", "/srv"),))
    if os.geteuid() != 0:
        pytest.skip("the credentials are computed for a root daemon only")
    credentials, user_env = sh._credentials(spec)
    assert credentials == {
        "user": NOBODY.pw_uid,
        "group": NOBODY.pw_gid,
        "extra_groups": os.getgrouplist("nobody", NOBODY.pw_gid),
        "umask": 0o027,
    }
    env = sh._env(spec, user_env)
    assert (env["USER"], env["LOGNAME"]) == ("nobody", "nobody")
    assert env["HOME"] == "/srv"  # the config's env wins over the user's home


@needs_root
def test_names_are_looked_up_once_per_spec_until_cleared() -> None:
    """A crash-looping user= child restarts without asking the name service again (it may be LDAP)."""
    sh = shell()
    spec = WorkerSpec(name="w", command=("sleep", "1"), user="nobody")
    for _ in range(3):
        sh.check(spec)
        assert sh.identity(spec) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert sh.credentials.lookups == 1
    sh.check(WorkerSpec(name="other", command=("sleep", "2"), user="nobody"))  # same user values: same entry
    assert sh.credentials.lookups == 1
    sh.check(WorkerSpec(name="w", command=("sleep", "1"), user="nobody", umask=0o077))  # a changed spec
    assert sh.credentials.lookups == 2
    sh.clear_credentials()  # at a reload
    sh.check(spec)
    assert sh.credentials.lookups == 3


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory others may enter (pytest's tmp_path is under a 0700 one)."""
    base = Path(tempfile.mkdtemp(prefix="fb-reach-"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base)


@needs_root
def test_a_user_child_gets_the_setpriv_chain_when_it_cannot_reach_the_helper(open_tmp: Path) -> None:
    """The daemon's own helper in a directory nobody cannot enter (a venv in a 0700 home) is left out of that
    child's chain, whose programs are all within reach; root's children keep the helper."""
    private = open_tmp / "private"
    private.mkdir(mode=0o700)
    helper = private / "foundation-exec"
    helper.write_bytes(b"")
    helper.chmod(0o755)
    sh = shell()
    sh.exec_helper = str(helper)
    spec = WorkerSpec(name="w", command=("sleep", "1"), user="nobody")
    argv = sh._argv(spec, sh.credentials.of(spec))
    assert Path(argv[0]).name == "setpriv"
    assert argv[-2].endswith("/sleep")
    assert sh._argv(WorkerSpec(name="w", command=("sleep", "1")))[0] == str(helper)


@needs_root
def test_a_command_its_user_cannot_reach_is_refused_with_the_path(open_tmp: Path) -> None:
    private = open_tmp / "private"
    (private / "bin").mkdir(parents=True)
    private.chmod(0o700)
    script = private / "bin" / "run"
    script.write_text("#!/bin/sh\nexec sleep 1000\n")
    script.chmod(0o755)
    spec = WorkerSpec(name="w", command=(str(script),), user="nobody")
    with pytest.raises(SpawnError, match=rf"{script}: uid {NOBODY.pw_uid} may not enter {private} "):
        shell().check(spec)
    private.chmod(0o711)  # searchable now, but a script must be readable too
    script.chmod(0o711)
    with pytest.raises(SpawnError, match=rf"{script}: uid {NOBODY.pw_uid} may not read this script"):
        shell().check(spec)
    script.chmod(0o755)
    shell().check(spec)
    shell().check(WorkerSpec(name="w", command=(str(script),)))  # root reaches everything


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (WorkerSpec(name="w", command=("sleep",), user="nobody"), 'user = "nobody" needs foundationd to run as root'),
        (WorkerSpec(name="w", command=("sleep",), group="0"), 'group = "0" needs foundationd to run as root'),
    ],
)
def test_a_non_root_daemon_refuses_user_and_group(
    monkeypatch: pytest.MonkeyPatch, spec: WorkerSpec, message: str
) -> None:
    # A mock: the suite runs as root here, so a non-root daemon is simulated by faking geteuid.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    sh = shell()
    with pytest.raises(SpawnError, match=message):
        sh.spawn(spec)
    with pytest.raises(SpawnError, match=message):
        sh.check(spec)
    assert sh.live == {}


def test_a_user_child_cannot_be_given_a_hard_limit_above_the_daemons() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to get past the user check")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spec = WorkerSpec(name="w", command=("sleep", "1"), user="nobody", limits=(("nofile", 64, hard + 1),))
    with pytest.raises(SpawnError, match=rf"limits\.nofile: hard limit {hard + 1} is above foundationd's own"):
        shell().check(spec)
    # Lowering is always allowed, and root itself may raise.
    shell().check(WorkerSpec(name="w", command=("sleep", "1"), user="nobody", limits=(("nofile", 64, 64),)))
    shell().check(WorkerSpec(name="w", command=("sleep", "1"), limits=(("nofile", 64, hard + 1),)))


def test_missing_prlimit_is_a_spawn_error_naming_it() -> None:
    sh = shell()
    sh._prlimit = None
    with pytest.raises(SpawnError, match="limits need util-linux prlimit"):
        sh.check(WorkerSpec(name="w", command=("sleep", "1"), limits=(("core", 0, 0),)))
    sh.check(WorkerSpec(name="w", command=("sleep", "1")))  # only children with limits need it


# ---- real daemons: what the child gets ----


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits as {"Max open files": ("256", "512"), ...}."""
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard, *_ = re.split(r"\s{2,}", line.strip())
        limits[name] = (soft, hard)
    return limits


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


@needs_root
def test_child_runs_as_nobody_with_its_groups_and_no_capabilities(start_daemon) -> None:
    d = start_daemon(worker('user = "nobody"\nlimits = { nofile = [100, 200] }'))
    pid = d.wait_running("w")
    wait_for(lambda: comm(pid) == "sleep", what="the exec chain to reach sleep")
    status = proc_status(pid)
    assert status["Uid"].split() == [str(NOBODY.pw_uid)] * 4  # real, effective, saved, filesystem
    assert status["Gid"].split() == [str(NOBODY.pw_gid)] * 4
    assert {int(g) for g in status["Groups"].split()} == set(os.getgrouplist("nobody", NOBODY.pw_gid))
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == 0
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
    )
    assert (environ["USER"], environ["LOGNAME"], environ["HOME"]) == ("nobody", "nobody", NOBODY.pw_dir)
    assert proc_limits(pid)["Max open files"] == ("100", "200")  # prlimit lowered them as nobody


@needs_root
def test_child_with_only_a_group(start_daemon) -> None:
    d = start_daemon(worker(f'group = "{NOBODY_GROUP}"'))
    pid = d.wait_running("w")
    wait_for(lambda: comm(pid) == "sleep", what="the exec chain to reach sleep")
    status = proc_status(pid)
    assert status["Uid"].split() == [str(os.getuid())] * 4
    assert status["Gid"].split() == [str(NOBODY.pw_gid)] * 4


def test_rlimits_are_visible_in_proc_limits(start_daemon) -> None:
    d = start_daemon(
        worker('limits = { nofile = [256, 512], as = "4G", core = 0, cpu = [3600, "infinity"], fsize = "1G" }')
    )
    pid = d.wait_running("w")
    wait_for(lambda: comm(pid) == "sleep", what="prlimit to exec the command")  # same pid: prlimit execs it
    limits = proc_limits(pid)
    assert limits["Max open files"] == ("256", "512")
    assert limits["Max address space"] == (str(4 << 30), str(4 << 30))
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max cpu time"] == ("3600", "unlimited")
    assert limits["Max file size"] == (str(1 << 30), str(1 << 30))
    # The limits survive a restart: they are in the exec chain of every spawn.
    d.request("restart", name="w")
    again = d.wait_running("w", not_pid=pid)
    wait_for(lambda: comm(again) == "sleep", what="prlimit to exec the command")
    assert proc_limits(again)["Max open files"] == ("256", "512")


def test_umask_is_visible_in_proc_status(start_daemon) -> None:
    d = start_daemon(worker('umask = "0027"') + worker("", name="plain"))
    pid = d.wait_running("w")
    assert proc_status(pid)["Umask"] == "0027"
    plain = d.wait_running("plain")
    assert proc_status(plain)["Umask"] == proc_status(d.proc.pid)["Umask"]  # inherited from the daemon


def test_a_child_without_these_keys_runs_its_command_directly(start_daemon) -> None:
    d = start_daemon(worker(""))
    pid = d.wait_running("w")
    wait_for(lambda: comm(pid) == "sleep", what="sleep")
    assert proc_limits(pid)["Max open files"] == proc_limits(d.proc.pid)["Max open files"]


def test_a_child_over_max_memory_is_restarted(start_daemon, tmp_path: Path) -> None:
    once = tmp_path / "hogged"
    command = json.dumps([sys.executable, HOG, "100", str(once)])
    d = start_daemon(worker('max_memory = "50M"', command=command, name="hog"))
    first = d.wait_running("hog")
    second = d.wait_running("hog", not_pid=first, timeout=15)
    assert second != first
    wait_for(lambda: "over max_memory 50 MiB" in d.log(), what=f"the reason in the log: {d.log()}")
    assert d.node("hog")["restarts"] == 1
    assert once.exists()


# ---- MemoryWatch, driven by hand ----


class FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    @property
    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def fire(self) -> None:
        due, self.timers = self.pending, []
        for timer in due:
            timer.callback()


@pytest.fixture
def hogs() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start memory hogs (each holds MB MiB once it says "ready"); all are killed and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(mb: int, process_group: int = 0) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, HOG, str(mb)], stdout=subprocess.PIPE, process_group=process_group)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


class Harness:
    def __init__(self, watched: list[tuple[str, int, int]]) -> None:
        self.loop = FakeLoop()
        self.watched = watched
        self.kills: list[tuple[str, int, str]] = []
        self.watch = MemoryWatch(self.loop.call_later, lambda: list(self.watched), self._kill, interval=0.5)

    def _kill(self, name: str, pid: int, reason: str) -> None:
        self.kills.append((name, pid, reason))


def test_no_timer_while_no_child_sets_max_memory() -> None:
    h = Harness([])
    h.watch.poke()
    h.watch.poke()
    assert h.loop.timers == []
    assert not h.watch.armed


def test_a_child_under_its_bound_is_left_alone_and_checked_again(hogs: Any) -> None:
    hog = hogs(16)
    h = Harness([("hog", hog.pid, 1 << 30)])
    h.watch.poke()
    h.watch.poke()  # already armed: still one timer
    assert [t.delay for t in h.loop.pending] == [0.5]
    h.loop.fire()
    assert h.kills == []
    assert len(h.loop.pending) == 1


def test_a_child_over_its_bound_is_killed_once_with_the_reason(hogs: Any) -> None:
    hog = hogs(64)
    h = Harness([("hog", hog.pid, 32 * MiB)])
    h.watch.poke()
    h.loop.fire()
    [(name, pid, reason)] = h.kills
    assert (name, pid) == ("hog", hog.pid)
    assert re.fullmatch(r"rss \d+(\.\d)? MiB over max_memory 32 MiB", reason), reason
    assert float(reason.split()[1]) >= 64
    h.loop.fire()  # its death is still on its way (the fake kill did nothing): not killed twice
    assert len(h.kills) == 1
    assert len(h.loop.pending) == 1


def test_the_timer_stops_when_no_watched_child_runs(hogs: Any) -> None:
    hog = hogs(16)
    h = Harness([("hog", hog.pid, 1 << 30)])
    h.watch.poke()
    h.watched.clear()  # the child stopped
    h.loop.fire()
    assert h.loop.pending == []
    h.watch.poke()
    assert h.loop.pending == []
    h.watched.append(("hog", hog.pid, 1 << 30))  # started again
    h.watch.poke()
    assert len(h.loop.pending) == 1
    h.watch.close()
    assert h.loop.pending == []


def test_rss_is_summed_over_the_process_group(hogs: Any) -> None:
    leader = hogs(40)
    member = hogs(40, process_group=leader.pid)  # a helper the worker forked, still in its group
    outsider = hogs(40)  # its own group: not counted
    totals = group_rss({leader.pid, outsider.pid})
    assert totals[leader.pid] >= 80 * MiB
    assert 40 * MiB <= totals[outsider.pid] < 80 * MiB
    h = Harness([("leader", leader.pid, 64 * MiB), ("outsider", outsider.pid, 64 * MiB)])
    h.watch.poke()
    h.loop.fire()
    assert [(name, pid) for name, pid, _ in h.kills] == [("leader", leader.pid)]
    assert member.poll() is None  # killing is the daemon's job, not the watch's


def test_a_grandchild_in_the_group_counts_and_all_of_proc_is_not_read(
    hogs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """leader (sh) -> subshell -> memory hog: the hog is two levels down, still in the leader's group."""
    leader = subprocess.Popen(["sh", "-c", f'("{sys.executable}" "{HOG}" 48; true) & wait'], stdout=subprocess.PIPE,
                              process_group=0)
    try:
        assert leader.stdout is not None
        assert leader.stdout.readline() == b"ready\n"
        outsider = hogs(16)
        listed: list[str] = []
        real_listdir = os.listdir
        monkeypatch.setattr(os, "listdir", lambda path=".": listed.append(str(path)) or real_listdir(path))
        totals = group_rss({leader.pid, outsider.pid})
        monkeypatch.undo()
        assert totals[leader.pid] >= 48 * MiB
        assert 16 * MiB <= totals[outsider.pid] < 48 * MiB
        assert "/proc" not in listed  # only the tasks of the processes it visits
        assert all(path.startswith("/proc/") and path.endswith("/task") for path in listed), listed
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
        assert leader.stdout is not None
        leader.stdout.close()


def test_a_vanished_child_counts_as_nothing() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    h = Harness([("gone", gone.pid, 1)])
    h.watch.poke()
    h.loop.fire()
    assert h.kills == []
    assert group_rss({gone.pid}) == {gone.pid: 0}

