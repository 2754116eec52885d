"""SPEC §7: lookup order, defaults, path resolution, validation messages, config init round trip."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from durablectl import config as cfg
from durablectl.config import (
    Config,
    config_as_dict,
    config_items,
    default_values,
    find_config,
    load_config,
    render_default_config,
    service_options,
    store_options,
)
from durablectl.errors import ConfigError

# The §7 block of SPEC.md, copied verbatim: the contract the defaults are held to.
SPEC_BLOCK = '''
db = ""                          # "": durablectl.db in the platformdirs user data dir
workflows = "workflows"          # folder of workflow modules, relative to this file's folder
implicit_step_ids = "allow"      # allow | warn | error

[daemon]
concurrency = 100                # executions run at once
lease_seconds = 30
grace_seconds = 10               # daemon stop: time for running steps to finish
cache_size = 1000                # executions kept in memory between wake-ups; 0 = always replay
log_file = ""                    # default: in the platformdirs user state dir

[sqlite]
synchronous = "FULL"             # FULL | NORMAL
busy_timeout_ms = 5000

[limits]
max_payload_bytes = 1048576      # inputs, step results, signal payloads

[audit]
enabled = true

[schedules]
catch_up = "one"                 # one | all | none: default for schedules that do not say
overlap = "allow"                # allow | skip | queue
misfire_grace_seconds = 60       # a tick seen later than this after its due time was missed
max_catch_up = 100               # catch_up = "all" runs at most this many missed ticks

[dashboard]
enabled = false
host = "127.0.0.1"
port = 8765
token = ""                       # required when enabled
allowed_hosts = []               # Host names accepted besides the bound address and localhost
operator = true                  # false: a read-only dashboard

[hooks]
on_event = ""                    # a command run with each event as JSON on stdin
'''


@dataclasses.dataclass
class Dirs:
    cwd: Path
    config_home: Path
    data_home: Path

    @property
    def user_file(self) -> Path:
        return self.config_home / "durablectl" / "durablectl.toml"

    @property
    def default_db(self) -> Path:
        return self.data_home / "durablectl" / "durablectl.db"


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dirs:
    """platformdirs pointed into tmp_path, no DURABLECTL_* variables, an empty working dir."""
    d = Dirs(tmp_path / "cwd", tmp_path / "xdg-config", tmp_path / "xdg-data")
    for folder in (d.cwd, d.config_home, d.data_home):
        folder.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(d.config_home))
    monkeypatch.setenv("XDG_DATA_HOME", str(d.data_home))
    monkeypatch.delenv("DURABLECTL_CONFIG", raising=False)
    monkeypatch.delenv("DURABLECTL_DB", raising=False)
    monkeypatch.chdir(d.cwd)
    return d


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_text(dirs: Dirs, text: str) -> Config:
    return load_config(write(dirs.cwd / "durablectl.toml", text), environ={}, cwd=dirs.cwd)


# --- lookup ------------------------------------------------------------------------------------

def test_lookup_order_is_option_then_env_then_cwd_then_user_dir(dirs: Dirs, tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", "")
    from_env = write(tmp_path / "env.toml", "")
    in_cwd = write(dirs.cwd / "durablectl.toml", "")
    user = write(dirs.user_file, "")
    environ = {"DURABLECTL_CONFIG": str(from_env)}

    assert find_config(explicit, environ=environ, cwd=dirs.cwd) == explicit
    assert find_config(None, environ=environ, cwd=dirs.cwd) == from_env
    assert find_config(None, environ={}, cwd=dirs.cwd) == in_cwd
    in_cwd.unlink()
    assert find_config(None, environ={}, cwd=dirs.cwd) == user
    user.unlink()
    assert find_config(None, environ={}, cwd=dirs.cwd) is None


def test_lookup_uses_the_process_environment_and_cwd_by_default(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    in_cwd = write(dirs.cwd / "durablectl.toml", "")
    assert find_config() == in_cwd
    from_env = write(tmp_path / "env.toml", "")
    monkeypatch.setenv("DURABLECTL_CONFIG", str(from_env))
    assert find_config() == from_env


def test_an_empty_variable_counts_as_unset(dirs: Dirs) -> None:
    user = write(dirs.user_file, "")
    assert find_config(None, environ={"DURABLECTL_CONFIG": ""}, cwd=dirs.cwd) == user


def test_a_relative_explicit_path_is_relative_to_cwd(dirs: Dirs) -> None:
    target = write(dirs.cwd / "conf" / "mine.toml", "")
    assert find_config("conf/mine.toml", environ={}, cwd=dirs.cwd) == target
    assert load_config("conf/mine.toml", environ={}, cwd=dirs.cwd).path == target


@pytest.mark.parametrize(("explicit", "environ", "origin"), [
    ("missing.toml", {}, "--config"),
    (None, {"DURABLECTL_CONFIG": "missing.toml"}, "$DURABLECTL_CONFIG"),
])
def test_a_named_file_that_does_not_exist_is_an_error(
    dirs: Dirs, explicit: str | None, environ: dict[str, str], origin: str
) -> None:
    write(dirs.cwd / "durablectl.toml", "")  # must not be used as a fallback
    with pytest.raises(ConfigError) as err:
        load_config(explicit, environ=environ, cwd=dirs.cwd)
    missing = dirs.cwd / "missing.toml"
    assert str(err.value) == f"config file {missing} (from {origin}) does not exist"
    assert err.value.exit_code == 2


def test_a_named_directory_is_an_error(dirs: Dirs) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        find_config(str(dirs.cwd), environ={}, cwd=dirs.cwd)


# --- defaults and paths ------------------------------------------------------------------------

def test_defaults_without_a_file(dirs: Dirs) -> None:
    config = load_config(environ={}, cwd=dirs.cwd)
    assert config.path is None
    assert config.db == dirs.default_db
    assert config.workflows == dirs.cwd / "workflows"
    assert config.daemon.log_file is None
    assert config == Config()
    assert set(config.sources.values()) == {"default"}
    shaped = config_as_dict(config)
    expected = default_values()
    expected.update(db=str(dirs.default_db), workflows=str(dirs.cwd / "workflows"))
    expected["daemon"]["log_file"] = None
    assert shaped == expected


def test_defaults_are_those_of_the_spec() -> None:
    assert default_values() == tomllib.loads(SPEC_BLOCK)
    for section, kind in cfg._SECTION_TYPES.items():
        assert [f.name for f in dataclasses.fields(kind)] == list(default_values()[section])


def test_relative_paths_are_resolved_against_the_config_folder(dirs: Dirs, tmp_path: Path) -> None:
    path = write(tmp_path / "project" / "etc" / "durablectl.toml", '''
db = "../data/app.db"
workflows = "flows"
[daemon]
log_file = "logs/daemon.log"
''')
    config = load_config(path, environ={}, cwd=dirs.cwd)
    assert config.db == tmp_path / "project" / "data" / "app.db"
    assert config.workflows == tmp_path / "project" / "etc" / "flows"
    assert config.daemon.log_file == tmp_path / "project" / "etc" / "logs" / "daemon.log"


def test_absolute_and_home_paths_are_kept(
    dirs: Dirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_text(dirs, f'db = "{tmp_path / "abs.db"}"\nworkflows = "~/flows"\n')
    assert config.db == tmp_path / "abs.db"
    assert config.workflows == tmp_path / "home" / "flows"


def test_empty_db_in_a_file_means_the_user_data_dir(dirs: Dirs) -> None:
    config = load_text(dirs, 'db = ""\n')
    assert config.db == dirs.default_db
    assert config.sources["db"] == str(dirs.cwd / "durablectl.toml")


def test_env_and_option_win_over_the_file_for_db(dirs: Dirs) -> None:
    path = write(dirs.cwd / "sub" / "durablectl.toml", 'db = "file.db"\n')
    assert load_config(path, environ={}, cwd=dirs.cwd).db == dirs.cwd / "sub" / "file.db"

    environ = {"DURABLECTL_DB": "env.db"}
    by_env = load_config(path, environ=environ, cwd=dirs.cwd)
    assert (by_env.db, by_env.sources["db"]) == (dirs.cwd / "env.db", "$DURABLECTL_DB")

    by_option = load_config(path, db_override="opt.db", environ=environ, cwd=dirs.cwd)
    assert (by_option.db, by_option.sources["db"]) == (dirs.cwd / "opt.db", "--db")

    without_file = load_config(db_override="/x/y.db", environ={}, cwd=dirs.cwd)
    assert (without_file.db, without_file.sources["db"]) == (Path("/x/y.db"), "--db")


def test_sources_name_the_file_for_the_keys_it_sets(dirs: Dirs) -> None:
    config = load_text(dirs, "[daemon]\nconcurrency = 7\n[dashboard]\nenabled = true\n"
                             'token = "s3cret"\n')
    path = str(dirs.cwd / "durablectl.toml")
    assert config.daemon.concurrency == 7
    assert config.sources["daemon.concurrency"] == path
    assert config.sources["dashboard.token"] == path
    assert config.sources["daemon.lease_seconds"] == "default"
    rows = {key: (value, source) for key, value, source in config_items(config)}
    assert rows["daemon.concurrency"] == (7, path)
    assert rows["daemon.lease_seconds"] == (30.0, "default")
    assert rows["dashboard.token"] == ("********", path)
    assert [key for key, _v, _s in config_items(config)] == list(config.sources)
    assert len(rows) == 23


def test_config_show_output_is_json_and_masks_the_token(dirs: Dirs) -> None:
    config = load_text(dirs, '[dashboard]\nenabled = true\ntoken = "s3cret"\n'
                             'allowed_hosts = ["example.org"]\n')
    shaped = json.loads(json.dumps(config_as_dict(config)))
    assert shaped["dashboard"]["token"] == "********"
    assert shaped["dashboard"]["allowed_hosts"] == ["example.org"]
    assert config_as_dict(config, show_secrets=True)["dashboard"]["token"] == "s3cret"


def test_good_values_are_accepted_and_normalised(dirs: Dirs) -> None:
    config = load_text(dirs, '''
implicit_step_ids = "error"
[daemon]
lease_seconds = 1.5
grace_seconds = 0
cache_size = 0
[sqlite]
synchronous = "normal"
[schedules]
catch_up = "all"
overlap = "queue"
[dashboard]
port = 0
allowed_hosts = ["a.example", "b.example"]
operator = false
[hooks]
on_event = "logger -t durablectl"
''')
    assert config.implicit_step_ids == "error"
    assert (config.daemon.lease_seconds, config.daemon.grace_seconds) == (1.5, 0.0)
    assert config.daemon.cache_size == 0
    assert config.sqlite.synchronous == "NORMAL"
    assert (config.schedules.catch_up, config.schedules.overlap) == ("all", "queue")
    assert config.dashboard.port == 0
    assert config.dashboard.allowed_hosts == ("a.example", "b.example")
    assert config.dashboard.operator is False
    assert config.hooks.on_event == "logger -t durablectl"


def test_config_is_frozen_and_hashable(dirs: Dirs) -> None:
    config = load_config(environ={}, cwd=dirs.cwd)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.db = Path("x")  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.sources["db"] = "x"  # type: ignore[index]
    assert hash(config) == hash(Config())


# --- validation --------------------------------------------------------------------------------

BAD_VALUES = [
    ('[daemon]\nconcurrency = "ten"', "daemon.concurrency must be a positive integer, got \"ten\""),
    ("[daemon]\nconcurrency = true", "daemon.concurrency must be a positive integer, got true"),
    ("[daemon]\nconcurrency = 0", "daemon.concurrency must be a positive integer, got 0"),
    ("[daemon]\nconcurrency = -1", "daemon.concurrency must be a positive integer, got -1"),
    ("[daemon]\nconcurrency = 1.5", "daemon.concurrency must be a positive integer, got 1.5"),
    ("[daemon]\nlease_seconds = 0", "daemon.lease_seconds must be a positive number of seconds"),
    ('[daemon]\nlease_seconds = "30"', "daemon.lease_seconds must be a positive number"),
    ("[daemon]\nlease_seconds = inf", "daemon.lease_seconds must be a positive number of "
                                      "seconds, got inf"),
    ("[daemon]\ngrace_seconds = -1", "daemon.grace_seconds must be a number of seconds >= 0"),
    ("[daemon]\ncache_size = -1", "daemon.cache_size must be an integer >= 0, got -1"),
    ("[daemon]\nlog_file = 5", "daemon.log_file must be a string, got 5"),
    ('[sqlite]\nsynchronous = "OFF"', 'sqlite.synchronous must be one of FULL | NORMAL, got "OFF"'),
    ("[sqlite]\nbusy_timeout_ms = 0", "sqlite.busy_timeout_ms must be a positive integer"),
    ("[limits]\nmax_payload_bytes = 0", "limits.max_payload_bytes must be a positive integer"),
    ('[audit]\nenabled = "yes"', 'audit.enabled must be true or false, got "yes"'),
    ('[schedules]\ncatch_up = "some"', "schedules.catch_up must be one of one | all | none"),
    ('[schedules]\noverlap = "never"', "schedules.overlap must be one of allow | skip | queue"),
    ("[schedules]\nmisfire_grace_seconds = -5", "schedules.misfire_grace_seconds must be a "
                                                "number of seconds >= 0"),
    ("[schedules]\nmax_catch_up = 0", "schedules.max_catch_up must be a positive integer"),
    ('implicit_step_ids = "sometimes"', "implicit_step_ids must be one of allow | warn | error"),
    ("db = 3", "db must be a string, got 3"),
    ('workflows = ""', 'workflows must be a non-empty path, got ""'),
    ("workflows = []", "workflows must be a non-empty path, got []"),
    ("[dashboard]\nport = 70000", "dashboard.port must be an integer from 0 to 65535, got 70000"),
    ("[dashboard]\nport = -1", "dashboard.port must be an integer from 0 to 65535, got -1"),
    ('[dashboard]\nhost = ""', "dashboard.host must be a non-empty string"),
    ('[dashboard]\nallowed_hosts = "x"', "dashboard.allowed_hosts must be a list of strings"),
    ("[dashboard]\nallowed_hosts = [1]", "dashboard.allowed_hosts must be a list of strings"),
    ("[dashboard]\noperator = 1", "dashboard.operator must be true or false, got 1"),
    ("[dashboard]\nenabled = true", "dashboard.token is required when dashboard.enabled = true"),
    ('[dashboard]\nenabled = true\ntoken = "  "', "dashboard.token is required"),
    ("[hooks]\non_event = false", "hooks.on_event must be a string, got false"),
    ("daemon = 5", "[daemon] must be a table, got 5"),
]


@pytest.mark.parametrize(("text", "message"), BAD_VALUES)
def test_bad_values_name_the_file_and_the_key(dirs: Dirs, text: str, message: str) -> None:
    path = dirs.cwd / "durablectl.toml"
    with pytest.raises(ConfigError) as err:
        load_text(dirs, text + "\n")
    assert str(err.value).startswith(f"{path}: {message}")
    assert err.value.exit_code == 2


def test_the_message_of_the_brief_exactly(dirs: Dirs) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(dirs, '[daemon]\nconcurrency = "ten"\n')
    path = dirs.cwd / "durablectl.toml"
    assert str(err.value) == f'{path}: daemon.concurrency must be a positive integer, got "ten"'


@pytest.mark.parametrize(("text", "message"), [
    ("colour = 1", "unknown key colour"),
    ("[daemon]\nconcurency = 5",
     "unknown key daemon.concurency (did you mean daemon.concurrency?)"),
    ("[deamon]\nconcurrency = 5", "unknown section deamon (did you mean daemon?)"),
    ("[frobnicate]\n", "unknown section frobnicate"),
    ("[daemon.extra]\nx = 1", "unknown key daemon.extra"),
    ("[dashboard]\nport = 9000\nallowed_host = []", "unknown key dashboard.allowed_host"),
])
def test_unknown_keys_and_sections_are_errors(dirs: Dirs, text: str, message: str) -> None:
    path = dirs.cwd / "durablectl.toml"
    with pytest.raises(ConfigError) as err:
        load_text(dirs, text + "\n")
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_toml_syntax_error_names_the_file_and_the_line(dirs: Dirs) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(dirs, "[daemon]\nconcurrency = 5\nlease_seconds = \n")
    message = str(err.value)
    assert message.startswith(f"{dirs.cwd / 'durablectl.toml'}: invalid TOML: ")
    assert "line 3" in message


def test_a_file_that_is_not_utf8_is_an_error(dirs: Dirs) -> None:
    path = dirs.cwd / "durablectl.toml"
    path.write_bytes(b'db = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ={}, cwd=dirs.cwd)


# --- config init -------------------------------------------------------------------------------

def test_the_rendered_default_file_reads_back_as_the_defaults(dirs: Dirs) -> None:
    text = render_default_config()
    assert tomllib.loads(text) == default_values() == tomllib.loads(SPEC_BLOCK)
    path = write(dirs.cwd / "durablectl.toml", text)
    loaded = load_config(environ={}, cwd=dirs.cwd)
    assert loaded.path == path
    assert loaded == Config()
    assert set(loaded.sources.values()) == {str(path)}


def test_the_rendered_file_keeps_the_spec_comments() -> None:
    rendered = {line.split("=")[0].strip(): line for line in render_default_config().splitlines()
                if "=" in line and not line.startswith("#")}
    for line in SPEC_BLOCK.splitlines():
        if "#" in line:
            key = line.split("=")[0].strip()
            assert rendered[key] == line, key


# --- what the rest of the package gets ---------------------------------------------------------

def test_service_options_are_service_keywords_with_the_same_defaults(dirs: Dirs) -> None:
    from durablectl.service import DurableService

    params = inspect.signature(DurableService.__init__).parameters
    options = service_options(load_config(environ={}, cwd=dirs.cwd))
    assert options == {name: params[name].default for name in options}
    assert set(options) == {"concurrency", "lease_seconds", "grace_seconds", "implicit_step_ids",
                            "cache_size", "max_payload_bytes", "audit", "catch_up", "overlap",
                            "misfire_grace_seconds", "max_catch_up"}


def test_service_options_follow_the_file(dirs: Dirs) -> None:
    config = load_text(dirs, "[audit]\nenabled = false\n[daemon]\nconcurrency = 3\n"
                             "[schedules]\nmax_catch_up = 9\n")
    options = service_options(config)
    assert (options["audit"], options["concurrency"], options["max_catch_up"]) == (False, 3, 9)


@pytest.mark.full_level
def test_store_options_are_store_keywords_with_the_same_defaults(dirs: Dirs) -> None:
    from durablectl.store.sqlite import SqliteStore

    params = inspect.signature(SqliteStore.__init__).parameters
    options = store_options(load_config(environ={}, cwd=dirs.cwd))
    assert options == {name: params[name].default for name in options}
    assert set(options) == {"synchronous", "busy_timeout_ms"}
    custom = store_options(load_text(dirs, '[sqlite]\nsynchronous = "NORMAL"\n'
                                           "busy_timeout_ms = 250\n"))
    assert custom == {"synchronous": "NORMAL", "busy_timeout_ms": 250}
    store = SqliteStore(dirs.cwd / "x.db", **custom)
    try:
        assert (store.synchronous, store.busy_timeout_ms) == ("NORMAL", 250)
    finally:
        store.close()


def test_the_module_stays_light(dirs: Dirs) -> None:
    source = Path(cfg.__file__).read_text()
    top_level = {
        ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.parse(source).body if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    allowed = set(sys.stdlib_module_names) | {"platformdirs", "durablectl", "__future__"}
    assert top_level <= allowed
    code = ("import sys, durablectl.config as c; c.load_config(environ={}); "
            "bad = {'tomli_w', 'typer', 'rich', 'asyncio', 'sqlite3'} & set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
