"""The TOML configuration of SPEC §7: lookup, defaults, validation and the commented default file.

Read on every CLI start-up, so it stays light: standard library, platformdirs and the errors
module only (``tomli_w`` is imported by :func:`render_default_config` alone). Every problem is a
``ConfigError`` (exit code 2) whose message names the file and the dotted key, e.g.
``/home/me/durablectl.toml: daemon.concurrency must be a positive integer, got "ten"``.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from durablectl.errors import ConfigError

APP_NAME = "durablectl"
CONFIG_FILE_NAME = "durablectl.toml"
DB_FILE_NAME = "durablectl.db"
ENV_CONFIG = "DURABLECTL_CONFIG"
ENV_DB = "DURABLECTL_DB"

#: where a value came from, besides a config file's path
SOURCE_DEFAULT = "default"
SOURCE_ENV_DB = "$" + ENV_DB
SOURCE_DB_OPTION = "--db"

#: what config show prints instead of the dashboard token
SECRET_MASK = "********"

__all__ = [
    "AuditConfig",
    "Config",
    "DaemonConfig",
    "DashboardConfig",
    "HooksConfig",
    "LimitsConfig",
    "SchedulesConfig",
    "SqliteConfig",
    "config_as_dict",
    "config_items",
    "default_db_path",
    "default_values",
    "find_config",
    "load_config",
    "render_default_config",
    "service_options",
    "store_options",
    "user_config_file",
]


# --- the effective configuration -----------------------------------------------------------------
# Field defaults repeat the §7 block held by _SCHEMA below; tests/test_config.py keeps them equal.

@dataclass(frozen=True)
class DaemonConfig:
    concurrency: int = 100
    lease_seconds: float = 30.0
    grace_seconds: float = 10.0
    cache_size: int = 1000
    #: None: the daemon's own file in the platformdirs user state dir, named after the database
    log_file: Path | None = None


@dataclass(frozen=True)
class SqliteConfig:
    synchronous: str = "FULL"
    busy_timeout_ms: int = 5000


@dataclass(frozen=True)
class LimitsConfig:
    max_payload_bytes: int = 1_048_576


@dataclass(frozen=True)
class AuditConfig:
    enabled: bool = True


@dataclass(frozen=True)
class SchedulesConfig:
    catch_up: str = "one"
    overlap: str = "allow"
    misfire_grace_seconds: float = 60.0
    max_catch_up: int = 100


@dataclass(frozen=True)
class DashboardConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    allowed_hosts: tuple[str, ...] = ()
    operator: bool = True


@dataclass(frozen=True)
class HooksConfig:
    #: "" runs no hook
    on_event: str = ""


def default_db_path() -> Path:
    """``durablectl.db`` in the platformdirs user data dir: what ``db = ""`` means."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / DB_FILE_NAME


def user_config_file() -> Path:
    """The last place :func:`find_config` looks, and a natural target for ``config init``."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / CONFIG_FILE_NAME


def _cwd_workflows() -> Path:
    return Path.cwd() / "workflows"


def _all_default_sources() -> Mapping[str, str]:
    return types.MappingProxyType({key: SOURCE_DEFAULT for key in _dotted_keys()})


@dataclass(frozen=True)
class Config:
    """Effective settings with resolved paths, plus the file they came from and each source.

    ``path`` and ``sources`` describe provenance, not settings, so they take no part in ``==``:
    a file that spells out every default loads equal to ``Config()``.
    """

    db: Path = field(default_factory=default_db_path)
    workflows: Path = field(default_factory=_cwd_workflows)
    implicit_step_ids: str = "allow"
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    sqlite: SqliteConfig = field(default_factory=SqliteConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    #: the config file in use, None when running on defaults
    path: Path | None = field(default=None, compare=False)
    #: dotted key -> "default", the config file's path, "$DURABLECTL_DB" or "--db"
    sources: Mapping[str, str] = field(default_factory=_all_default_sources, compare=False)


_SECTION_TYPES: dict[str, type[Any]] = {
    "daemon": DaemonConfig,
    "sqlite": SqliteConfig,
    "limits": LimitsConfig,
    "audit": AuditConfig,
    "schedules": SchedulesConfig,
    "dashboard": DashboardConfig,
    "hooks": HooksConfig,
}


# --- the schema: defaults as TOML values, a check for each, the comment config init writes ------

class _Invalid(Exception):
    """Raised by a check: ``expected`` completes "<key> must be ..."."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Check = Callable[[Any], Any]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string")
    return value


def _path_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty path")
    return value


def _nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid("a list of strings")
    return tuple(value)


def _choice(*options: str, fold_case: bool = False) -> Check:
    def check(value: Any) -> str:
        if isinstance(value, str):
            text = value.upper() if fold_case else value
            if text in options:
                return text
        raise _Invalid("one of " + " | ".join(options))
    return check


def _integer(minimum: int, maximum: int | None = None) -> Check:
    if maximum is not None:
        expected = f"an integer from {minimum} to {maximum}"
    else:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def check(value: Any) -> int:
        # bool is an int subclass: `concurrency = true` must not read as 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise _Invalid(expected)
        return value
    return check


def _seconds(*, allow_zero: bool) -> Check:
    expected = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(expected)
        number = float(value)
        # TOML has inf and nan; neither is a usable duration
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            raise _Invalid(expected)
        return number
    return check


@dataclass(frozen=True)
class _Key:
    default: Any
    check: Check
    comment: str = ""


# "" is the top level. Order is the order of §7 and of the rendered file.
_SCHEMA: dict[str, dict[str, _Key]] = {
    "": {
        "db": _Key("", _string, '"": durablectl.db in the platformdirs user data dir'),
        "workflows": _Key("workflows", _path_text,
                          "folder of workflow modules, relative to this file's folder"),
        "implicit_step_ids": _Key("allow", _choice("allow", "warn", "error"),
                                  "allow | warn | error"),
    },
    "daemon": {
        "concurrency": _Key(100, _integer(1), "executions run at once"),
        "lease_seconds": _Key(30, _seconds(allow_zero=False),
                              "a stalled worker's executions are taken over after this"),
        "grace_seconds": _Key(10, _seconds(allow_zero=True),
                              "daemon stop: time for running steps to finish"),
        "cache_size": _Key(1000, _integer(0),
                           "executions kept in memory between wake-ups; 0 = always replay"),
        "log_file": _Key("", _string, "default: in the platformdirs user state dir"),
    },
    "sqlite": {
        "synchronous": _Key("FULL", _choice("FULL", "NORMAL", fold_case=True), "FULL | NORMAL"),
        "busy_timeout_ms": _Key(5000, _integer(1),
                                "how long to wait for a lock held by another process"),
    },
    "limits": {
        "max_payload_bytes": _Key(1_048_576, _integer(1),
                                  "inputs, step results, signal payloads"),
    },
    "audit": {
        "enabled": _Key(True, _boolean, "record the audit trail of each execution"),
    },
    "schedules": {
        "catch_up": _Key("one", _choice("one", "all", "none"),
                         "one | all | none: default for schedules that do not say"),
        "overlap": _Key("allow", _choice("allow", "skip", "queue"), "allow | skip | queue"),
        "misfire_grace_seconds": _Key(
            60, _seconds(allow_zero=True),
            "a tick seen later than this after its due time was missed"),
        "max_catch_up": _Key(100, _integer(1),
                             'catch_up = "all" runs at most this many missed ticks'),
    },
    "dashboard": {
        "enabled": _Key(False, _boolean, "serve the web dashboard from the daemon"),
        "host": _Key("127.0.0.1", _nonempty, "address the dashboard listens on"),
        # 0 lets the OS pick a free port (tests, several daemons); the daemon reports the URL
        "port": _Key(8765, _integer(0, 65535), "0: any free port"),
        "token": _Key("", _string, "required when enabled"),
        "allowed_hosts": _Key([], _string_list,
                              "Host names accepted besides the bound address and localhost"),
        "operator": _Key(True, _boolean, "false: a read-only dashboard"),
    },
    "hooks": {
        "on_event": _Key("", _string, "a command run with each event as JSON on stdin"),
    },
}


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _dotted_keys() -> list[str]:
    return [_dotted(section, key) for section, keys in _SCHEMA.items() for key in keys]


def default_values() -> dict[str, Any]:
    """The §7 defaults as TOML values (``db = ""`` and all), shaped like the file; a fresh copy."""
    values: dict[str, Any] = {}
    for section, keys in _SCHEMA.items():
        table = values.setdefault(section, {}) if section else values
        for key, spec in keys.items():
            table[key] = list(spec.default) if isinstance(spec.default, list) else spec.default
    return values


# --- lookup ------------------------------------------------------------------------------------

def _absolute(raw: str | os.PathLike[str], base: Path) -> Path:
    """``~`` expanded, relative to ``base``, normalised; symlinks are left alone."""
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _given_file(raw: str, origin: str, cwd: Path) -> Path:
    path = _absolute(raw, cwd)
    if not path.exists():
        raise ConfigError(f"config file {path} (from {origin}) does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} (from {origin}) is not a file")
    return path


def find_config(explicit: str | os.PathLike[str] | None = None, *,
                environ: Mapping[str, str] = os.environ,
                cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file in use: ``--config``, ``$DURABLECTL_CONFIG``, ``./durablectl.toml``, then
    the platformdirs user config dir; None when there is none.

    A file named explicitly (option or variable) must exist; an empty value counts as unset.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    if explicit is not None and str(explicit) != "":
        return _given_file(str(explicit), "--config", base)
    from_env = environ.get(ENV_CONFIG, "")
    if from_env:
        return _given_file(from_env, "$" + ENV_CONFIG, base)
    for candidate in (base / CONFIG_FILE_NAME, user_config_file()):
        if candidate.is_file():
            return _absolute(candidate, base)
    return None


# --- loading -----------------------------------------------------------------------------------

def _shown(value: Any) -> str:
    """A value as the user wrote it (TOML and JSON agree on strings, numbers and booleans)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # inf / nan, as TOML spells them
    return json.dumps(value, default=str)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # the message ends "(at line L, column C)"
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _unknown(path: Path, dotted: str, known: list[str], what: str = "key") -> ConfigError:
    import difflib  # only on this error path

    close = difflib.get_close_matches(dotted, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{path}: unknown {what} {dotted}{hint}")


def _check(path: Path, dotted: str, spec: _Key, value: Any) -> Any:
    try:
        return spec.check(value)
    except _Invalid as exc:
        raise ConfigError(f"{path}: {dotted} must be {exc.expected}, got {_shown(value)}") from None


def _validate(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The values the file sets, checked and normalised, by dotted key, in file order."""
    found: dict[str, Any] = {}
    known = _dotted_keys()
    for name, value in data.items():
        if name in _SCHEMA[""]:
            found[name] = _check(path, name, _SCHEMA[""][name], value)
        elif name in _SCHEMA and name != "":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{name}] must be a table, got {_shown(value)}")
            for key, item in value.items():
                dotted = _dotted(name, key)
                spec = _SCHEMA[name].get(key)
                if spec is None:
                    raise _unknown(path, dotted, known)
                found[dotted] = _check(path, dotted, spec, item)
        elif isinstance(value, dict):
            raise _unknown(path, name, [s for s in _SCHEMA if s], "section")
        else:
            raise _unknown(path, name, known)
    if found.get("dashboard.enabled") and not found.get("dashboard.token", "").strip():
        raise ConfigError(f"{path}: dashboard.token is required when dashboard.enabled = true")
    return found


def load_config(explicit: str | os.PathLike[str] | None = None, *,
                db_override: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] = os.environ,
                cwd: str | os.PathLike[str] | None = None) -> Config:
    """Find, read and validate the configuration; apply ``$DURABLECTL_DB`` and ``--db``.

    Paths in the file are relative to its folder; ``--db`` and ``$DURABLECTL_DB`` are relative
    to ``cwd``, and win over the file in that order. Nothing is created on disk.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    path = find_config(explicit, environ=environ, cwd=base)
    found = _validate(_read_toml(path), path) if path is not None else {}
    folder = path.parent if path is not None else base

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for section, keys in _SCHEMA.items():
        for key, spec in keys.items():
            dotted = _dotted(section, key)
            if dotted in found:
                values[dotted], sources[dotted] = found[dotted], str(path)
            else:
                values[dotted], sources[dotted] = spec.check(spec.default), SOURCE_DEFAULT

    from_env = environ.get(ENV_DB, "")
    if db_override is not None and str(db_override) != "":
        values["db"], sources["db"] = _absolute(db_override, base), SOURCE_DB_OPTION
    elif from_env:
        values["db"], sources["db"] = _absolute(from_env, base), SOURCE_ENV_DB
    elif values["db"] == "":
        values["db"] = default_db_path()
    else:
        values["db"] = _absolute(values["db"], folder)
    values["workflows"] = _absolute(values["workflows"], folder)
    log_file = values["daemon.log_file"]
    values["daemon.log_file"] = _absolute(log_file, folder) if log_file else None

    sections = {
        section: kind(**{key: values[_dotted(section, key)] for key in _SCHEMA[section]})
        for section, kind in _SECTION_TYPES.items()
    }
    return Config(db=values["db"], workflows=values["workflows"],
                  implicit_step_ids=values["implicit_step_ids"], **sections, path=path,
                  sources=types.MappingProxyType(sources))


# --- output ------------------------------------------------------------------------------------

def render_default_config() -> str:
    """The commented file ``durablectl config init`` writes: every key of §7 at its default."""
    import tomli_w  # only config init needs it

    lines = [
        "# durablectl configuration, written by `durablectl config init`.",
        "# Looked up in this order: --config, $DURABLECTL_CONFIG, ./durablectl.toml, the user",
        "# config dir. Relative paths are resolved against this file's folder. Every key below",
        "# is set to its default; remove the ones you do not change.",
        "",
    ]
    for section, keys in _SCHEMA.items():
        if section:
            lines += ["", f"[{section}]"]
        for key, spec in keys.items():
            text = tomli_w.dumps({key: spec.default}).rstrip("\n")
            lines.append(f"{text.ljust(32)} # {spec.comment}" if spec.comment else text)
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def config_as_dict(config: Config, *, show_secrets: bool = False) -> dict[str, Any]:
    """Effective values shaped like the file, JSON-friendly (paths as strings, no log file as
    null); the dashboard token is masked unless ``show_secrets``."""
    result: dict[str, Any] = {}
    for section, keys in _SCHEMA.items():
        holder: Any = getattr(config, section) if section else config
        table = result.setdefault(section, {}) if section else result
        for key in keys:
            table[key] = _plain(getattr(holder, key))
    if result["dashboard"]["token"] and not show_secrets:
        result["dashboard"]["token"] = SECRET_MASK
    return result


def config_items(config: Config, *, show_secrets: bool = False) -> list[tuple[str, Any, str]]:
    """``(dotted key, effective value, source)`` rows in §7 order, for ``config show``."""
    shaped = config_as_dict(config, show_secrets=show_secrets)
    rows: list[tuple[str, Any, str]] = []
    for section, keys in _SCHEMA.items():
        table = shaped[section] if section else shaped
        for key in keys:
            dotted = _dotted(section, key)
            rows.append((dotted, table[key], config.sources.get(dotted, SOURCE_DEFAULT)))
    return rows


def service_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of ``DurableService`` (besides store, workflows, worker id, clock)."""
    return {
        "concurrency": config.daemon.concurrency,
        "lease_seconds": config.daemon.lease_seconds,
        "grace_seconds": config.daemon.grace_seconds,
        "implicit_step_ids": config.implicit_step_ids,
        "cache_size": config.daemon.cache_size,
        "max_payload_bytes": config.limits.max_payload_bytes,
        "audit": config.audit.enabled,
        "catch_up": config.schedules.catch_up,
        "overlap": config.schedules.overlap,
        "misfire_grace_seconds": config.schedules.misfire_grace_seconds,
        "max_catch_up": config.schedules.max_catch_up,
    }


def store_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of ``SqliteStore(config.db, ...)``."""
    return {
        "synchronous": config.sqlite.synchronous,
        "busy_timeout_ms": config.sqlite.busy_timeout_ms,
    }
