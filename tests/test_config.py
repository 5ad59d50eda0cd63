"""Config loading (DESIGN 3.2): valid files become the expected specs, and every mistake names its key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.config import ConfigError, DaemonConfig, child_spec_from_dict, load_config, parse_config
from daemon.core.logfiles import LogSettings
from daemon.core.spec import (
    BRUTAL_KILL,
    INFINITY,
    Backoff,
    RestartType,
    Strategy,
    SupervisorSpec,
    WorkerSpec,
)

FULL = """
[daemon]
runtime_dir = "/run/foundation"
state_dir = "/var/lib/foundation"
control_group = "foundation"

[supervisor]
strategy = "one_for_all"
intensity = 3
period = 5

[[supervisor.children]]
name = "ticker"
command = ["python3", "-u", "ticker.py"]
restart = "transient"
shutdown = 2
env = { B = "2", A = "1" }
working_dir = "/srv"
backoff = { initial = 0.5, max = 8 }

[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
shutdown = "brutal_kill"
backoff = true

[[supervisor.children]]
name = "pipeline"
strategy = "rest_for_one"
restart = "temporary"

[[supervisor.children.children]]
name = "stage1"
command = ["a"]
shutdown = "infinity"

[[supervisor.children.children]]
name = "inner"
children = []
"""

EXPECTED = DaemonConfig(
    root=SupervisorSpec(
        name="root",
        strategy=Strategy.ONE_FOR_ALL,
        intensity=3,
        period=5.0,
        children=(
            WorkerSpec(
                name="ticker",
                command=("python3", "-u", "ticker.py"),
                restart=RestartType.TRANSIENT,
                shutdown=2.0,
                env=(("A", "1"), ("B", "2")),
                working_dir="/srv",
                backoff=Backoff(initial=0.5, max=8.0),
            ),
            WorkerSpec(
                name="counter",
                agent="agents.examples.counter:Counter",
                shutdown=BRUTAL_KILL,
                backoff=Backoff(),
            ),
            SupervisorSpec(
                name="pipeline",
                strategy=Strategy.REST_FOR_ONE,
                restart=RestartType.TEMPORARY,
                children=(
                    WorkerSpec(name="stage1", command=("a",), shutdown=INFINITY),
                    SupervisorSpec(name="inner"),
                ),
            ),
        ),
    ),
    runtime_dir="/run/foundation",
    state_dir="/var/lib/foundation",
    control_group="foundation",
    source="test.toml",
)


def test_full_config_becomes_the_expected_specs() -> None:
    config = parse_config(FULL, "test.toml")
    assert config == EXPECTED
    assert hash(config) == hash(EXPECTED)  # specs are values: a reload compares them


def test_numbers_become_floats() -> None:
    root = parse_config(FULL, "test.toml").root
    assert type(root.period) is float
    assert type(root.children[0].shutdown) is float


def test_empty_config_is_a_root_without_children() -> None:
    expected = DaemonConfig(root=SupervisorSpec(name="root"), source="empty.toml")
    assert parse_config("", "empty.toml") == expected


C0 = "supervisor.children[0]"  # the key of the first child, which most error cases are about


def _child(body: str) -> str:
    """A config with one child table named w, holding `body`."""
    return f'[[supervisor.children]]\nname = "w"\n{body}\n'


def _worker(extra: str = "", name: str = "w") -> str:
    return f'[[supervisor.children]]\nname = "{name}"\ncommand = ["x"]\n{extra}\n'


NESTED_DUPLICATE = """
[[supervisor.children]]
name = "a"
command = ["x"]
[[supervisor.children]]
name = "sup"
strategy = "one_for_one"
[[supervisor.children.children]]
name = "a"
command = ["x"]
"""

ERRORS = [
    # (toml, key the error must name, fragment of the message)
    ('[supervisor]\nstrategy = "one_for_none"', "supervisor.strategy", "unknown strategy"),
    (_child('strategy = "bogus"'), f"{C0}.strategy", "one_for_one, one_for_all, rest_for_one"),
    (NESTED_DUPLICATE, "supervisor.children[1].children[0].name", f"first used at {C0}.name"),
    (_worker() + _worker(), "supervisor.children[1].name", "duplicate name"),
    (_worker(name="root"), f"{C0}.name", "reserved"),
    ("[supervisor]\nintensity = -1", "supervisor.intensity", ">= 0"),
    ("[supervisor]\nintensity = true", "supervisor.intensity", "expected an integer, got boolean true"),
    ("[supervisor]\nintensity = 1.5", "supervisor.intensity", "expected an integer"),
    ("[supervisor]\nperiod = 0", "supervisor.period", "> 0"),
    ("[supervisor]\nperiod = nan", "supervisor.period", "finite"),
    ('[supervisor]\nperiod = "5"', "supervisor.period", "expected a number, got string"),
    ('[supervisor]\nname = "top"', "supervisor.name", "always named root"),
    ('[supervisor]\nrestart = "permanent"', "supervisor.restart", "no parent"),
    (_child(""), C0, "needs a command or an agent"),
    (_worker('agent = "m:C"'), C0, "not both"),
    ('[[supervisor.children]]\ncommand = ["x"]', f"{C0}.name", "missing"),
    ("unknown = 1", "unknown", "unknown key (known: cluster, daemon, dashboard, flags, metrics, migration, resilience, "
                               "supervisor, workflows)"),
    ("[workflows]\ntask_agents = 0", "workflows.task_agents", "an integer from 1 to 64"),
    ("[workflows]\nmonitors = 1", "workflows.monitors", "unknown key"),
    ("[workflows]\nhosts = -1", "workflows.hosts", "an integer from 0 to 64"),
    ("[daemon]\nruntime = 1", "daemon.runtime",
     "known: control_group, fork_server, log_dir, log_keep, log_max_size, runtime_dir, state_dir"),
    ("[daemon]\nstate_dir = 1", "daemon.state_dir", "expected a string, got integer 1"),
    (_child('comand = ["x"]'), f"{C0}.comand", "unknown key (known: agent, backoff, command,"),
    (_worker("backoff = { initial = 1, step = 2 }"), f"{C0}.backoff.step", "unknown key"),
    (_worker("backoff = { initial = 0 }"), f"{C0}.backoff.initial", "> 0"),
    (_worker("backoff = { factor = 0.5 }"), f"{C0}.backoff.factor", ">= 1"),
    (_worker("backoff = { initial = 5, max = 1 }"), f"{C0}.backoff.max", ">= initial"),
    (_worker("backoff = { jitter = 2 }"), f"{C0}.backoff.jitter", "between 0 and 1"),
    (_worker("backoff = { reset_after = 0 }"), f"{C0}.backoff.reset_after", "> 0"),
    (_worker('backoff = "yes"'), f"{C0}.backoff", "expected a table or a boolean"),
    (_worker('shutdown = "never"'), f"{C0}.shutdown", '"brutal_kill" or "infinity"'),
    (_worker("shutdown = 0"), f"{C0}.shutdown", "positive number"),
    (_worker("shutdown = -3"), f"{C0}.shutdown", "positive number"),
    (_worker("shutdown = true"), f"{C0}.shutdown", "got boolean"),
    (_worker(name="-bad"), f"{C0}.name", "invalid name"),
    (_worker(name="a b"), f"{C0}.name", "invalid name"),
    (_worker(name="x" * 65), f"{C0}.name", "invalid name"),
    (_worker('restart = "sometimes"'), f"{C0}.restart", "unknown restart type"),
    (_worker("env = { A = 1 }"), f"{C0}.env.A", "expected a string"),
    (_worker('env = { "A=B" = "1" }'), f'{C0}.env."A=B"', "environment variable name"),
    (_worker('working_dir = ""'), f"{C0}.working_dir", "must not be empty"),
    (_child("command = []"), f"{C0}.command", "must not be empty"),
    (_child('command = "x"'), f"{C0}.command", "array of strings"),
    (_child('command = ["x", 1]'), f"{C0}.command[1]", "expected a string"),
    (_child('command = ["x", ""]'), f"{C0}.command[1]", "must not be empty"),
    (_child('agent = "nocolon"'), f"{C0}.agent", "module.path:ClassName"),
    (_child('agent = "a.:B"'), f"{C0}.agent", "module.path:ClassName"),
    (_child('strategy = "one_for_one"\ncommand = ["x"]'), f"{C0}.command", "makes this child a supervisor"),
    ("[supervisor]\nchildren = [1]", C0, "expected a table, got integer"),
    ('supervisor = "root"', "supervisor", "expected a table"),
    ('"odd\\nkey" = 1', '"odd\\nkey"', "unknown key"),
    ("[daemon]\nlog_dir = 1", "daemon.log_dir", "expected a string, got integer 1"),
    ('[daemon]\nlog_max_size = "10 MB"', "daemon.log_max_size", 'a size like "10M"'),
    ("[daemon]\nlog_max_size = 100", "daemon.log_max_size", "at least 1024 bytes"),
    ("[daemon]\nlog_keep = 101", "daemon.log_keep", "between 0 and 100"),
    ('[daemon]\nlog_keep = "5"', "daemon.log_keep", "expected an integer"),
    (_worker("log_file = true"), f"{C0}.log_file", "expected a path, or false"),
    (_worker("log_file = 3"), f"{C0}.log_file", "expected a path (a string) or false, got integer 3"),
    (_worker('log_file = ""'), f"{C0}.log_file", "must not be empty"),
    (_worker("log_keep = -1"), f"{C0}.log_keep", "between 0 and 100"),
    (_worker('log_max_size = "1G"'), f"{C0}.log_max_size",
     "no log file to rotate (no log_file, and no [daemon] log_dir)"),
    ('[daemon]\nlog_dir = "/l"\n' + _worker("log_file = false\nlog_keep = 2"), f"{C0}.log_keep",
     "no log file to rotate (log_file = false)"),
    (_child('strategy = "one_for_one"\n[[supervisor.children.children]]\nname = "x"\ncommand = ["x"]\nlog_keep = 1'),
     f"{C0}.children[0].log_keep", "no log file to rotate"),
    ("[supervisor\nstrategy = 1", "", "invalid TOML"),
    ('a = "unterminated\nb = 1', "", "line 1"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), ERRORS)
def test_errors_name_the_key(text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.toml")
    err = caught.value
    assert (err.source, err.key) == ("bad.toml", key)
    assert fragment in err.message
    expected = f"bad.toml: {key}: {err.message}" if key else f"bad.toml: {err.message}"
    assert str(err) == expected
    assert "\n" not in str(err)


def test_toml_syntax_error_gives_the_line() -> None:
    with pytest.raises(ConfigError, match=r"line 3") as caught:
        parse_config('[daemon]\nstate_dir = "/x"\nbroken =\n', "bad.toml")
    assert caught.value.key == ""


def test_str_is_one_line_even_for_a_multiline_message() -> None:
    assert str(ConfigError("f.toml", "a.b", "first\nsecond")) == "f.toml: a.b: first second"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(FULL)
    # A relative log_file is taken from the file's directory (without a log_dir): the loader records it.
    logs = LogSettings(base=str(tmp_path))
    assert load_config(str(path)) == DaemonConfig(**{**EXPECTED.__dict__, "source": str(path), "logs": logs})


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_config(missing)
    assert caught.value.source == missing
    assert str(caught.value).startswith(f"{missing}: ")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[daemon]\nstate_dir = "/caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(path))


def test_workflows_table_refuses_a_name_the_tree_has_already() -> None:
    text = '[[supervisor.children]]\nname = "coordinator"\ncommand = ["true"]\n[workflows]\n'
    with pytest.raises(ConfigError, match="adds a child named 'coordinator'"):
        parse_config(text, "x.toml")


def test_workflows_table_adds_hosts_and_keeps_the_warm_pool_only_without_them() -> None:
    def env_of(text: str) -> tuple[list[str], dict[str, str]]:
        root = parse_config(text, "x.toml").root
        workflows = next(c for c in root.children if c.name == "workflows")
        coordinator = next(c for c in root.children if c.name == "coordinator")
        assert isinstance(workflows, SupervisorSpec)
        assert isinstance(coordinator, WorkerSpec)
        return [c.name for c in workflows.children], dict(coordinator.env)

    hosts, env = env_of("[workflows]\nhosts = 2\n")
    assert hosts == ["wfhost-1", "wfhost-2"]
    assert env["FOUNDATION_WORKFLOW_POOL"] == "0"
    hosts, env = env_of("[workflows]\nhosts = 0\npool = 3\n")
    assert hosts == []
    assert env["FOUNDATION_WORKFLOW_POOL"] == "3"


def test_embedded_default_loads_and_runs_on_our_interpreter() -> None:
    config = load_config(None)
    assert config.source == "<embedded>"
    assert config.root.name == "root"
    names = [child.name for child in config.root.children]
    assert names == ["ticker", "flaky", "counter", "pipeline", "workflows", "coordinator", "tasks", "monitor"]
    tasks = config.root.children[6]
    assert isinstance(tasks, SupervisorSpec)
    assert [(t.name, t.agent) for t in tasks.children] == [("task-1", "agents.builtin.task:TaskAgent"),
                                                            ("task-2", "agents.builtin.task:TaskAgent")]
    counter = config.root.children[2]
    assert isinstance(counter, WorkerSpec)
    assert counter.agent == "agents.examples.counter:Counter"
    pipeline = config.root.children[3]
    assert isinstance(pipeline, SupervisorSpec)
    assert pipeline.strategy is Strategy.REST_FOR_ONE
    workers = [*config.root.children[:2], *pipeline.children]
    assert [w.name for w in workers] == ["ticker", "flaky", "stage1", "stage2"]
    for worker in workers:
        assert isinstance(worker, WorkerSpec)
        assert worker.command[0] == sys.executable
        assert "@python@" not in " ".join(worker.command)
    assert dict(pipeline.children[0].env) == {"DEMO_LABEL": "stage1"}


def test_child_spec_from_dict_accepts_an_attach_request() -> None:
    request = {"name": "job", "command": ["sleep", "9"], "restart": "temporary", "shutdown": 1}
    spec = child_spec_from_dict(request)
    assert spec == WorkerSpec(name="job", command=("sleep", "9"), restart=RestartType.TEMPORARY, shutdown=1.0)
    agent = child_spec_from_dict({"name": "c", "agent": "agents.examples.counter:Counter"})
    assert agent == WorkerSpec(name="c", agent="agents.examples.counter:Counter")


def test_child_spec_from_dict_accepts_a_supervisor() -> None:
    spec = child_spec_from_dict({"name": "s", "children": [{"name": "w", "command": ["x"]}]})
    assert spec == SupervisorSpec(name="s", children=(WorkerSpec(name="w", command=("x",)),))


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ("job", "spec", "expected a table, got string"),
        ({"name": "job"}, "spec", "needs a command or an agent"),
        ({"name": "job", "command": ["x"], "restart": "always"}, "spec.restart", "unknown restart type"),
        ({"name": "job", "command": ["x"], "extra": 1}, "spec.extra", "unknown key"),
        ({"name": "job", "command": ["x"], "shutdown": False}, "spec.shutdown", "got boolean false"),
        ({"name": "root", "command": ["x"]}, "spec.name", "reserved"),
        (
            {"name": "s", "children": [{"name": "w", "command": ["x"]}, {"name": "w", "command": ["y"]}]},
            "spec.children[1].name",
            "duplicate",
        ),
    ],
)
def test_child_spec_from_dict_rejects_bad_requests(data: object, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        child_spec_from_dict(data)
    assert (caught.value.source, caught.value.key) == ("<request>", key)
    assert fragment in caught.value.message


def test_log_settings_and_a_childs_log_keys() -> None:
    text = """
        [daemon]
        log_dir = "/var/log/foundation"
        log_max_size = "2M"
        log_keep = 3
        [[supervisor.children]]
        name = "web"
        command = ["x"]
        log_file = "web/access.log"
        log_max_size = 4096
        log_keep = 0
        [[supervisor.children]]
        name = "quiet"
        command = ["x"]
        log_file = false
    """
    config = parse_config(text, "logs.toml")
    assert config.logs == LogSettings(directory="/var/log/foundation", max_size=2 << 20, keep=3)
    web, quiet = config.root.children
    assert (web.log_file, web.log_max_size, web.log_keep) == ("web/access.log", 4096, 0)
    assert (quiet.log_file, quiet.log_max_size, quiet.log_keep) == (False, None, None)


def test_a_relative_log_dir_is_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[daemon]\nlog_dir = "logs"\n')
    assert load_config(str(path)).logs == LogSettings(directory=str(tmp_path / "logs"), base=str(tmp_path))
