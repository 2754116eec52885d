"""What every command shares: its four options, the lazily opened config/store/client, the
output mode, and the one-line error at the edge.

Kept light: a read command imports this, typer and the store, and nothing of the engine."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from durablectl.errors import DurableError

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[str | None, typer.Option(
    "--db", envvar="DURABLECTL_DB", show_envvar=True, help="The database file.")]
ConfigOption = Annotated[str | None, typer.Option(
    "--config", envvar="DURABLECTL_CONFIG", show_envvar=True,
    help="The configuration file (default: ./durablectl.toml, then the user config dir).")]
JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print JSON (an object, or JSON lines for a list).")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")]


class Session:
    """One command's view of configuration, store and client, opened on first use."""

    def __init__(self, db: str | None, config: str | None, json: bool, debug: bool) -> None:
        self.db_option = db
        self.config_option = config
        self.json = json
        self.debug = debug
        self._config: Any = None
        self._store: Any = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from durablectl.config import load_config

            self._config = load_config(self.config_option, db_override=self.db_option)
        return self._config

    @property
    def db_path(self) -> str:
        return str(self.config.db)

    @property
    def store(self) -> Any:
        if self._store is None:
            from durablectl.config import store_options
            from durablectl.store.sqlite import SqliteStore

            self._store = SqliteStore(self.db_path, **store_options(self.config))
        return self._store

    def client(self) -> Any:
        from durablectl.client import DurableClient

        return DurableClient(self.store,
                             max_payload_bytes=self.config.limits.max_payload_bytes)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def mode(self) -> str:
        """``json`` with --json; ``rich`` on a terminal; ``plain`` when piped."""
        if self.json:
            return "json"
        return "rich" if sys.stdout.isatty() else "plain"

    def nudge(self) -> bool:
        """Wake the database's daemon so it sees what we just committed."""
        from durablectl.daemon.ipc import nudge
        from durablectl.daemon.paths import socket_for

        return nudge(socket_for(self.db_path, self.store))


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def fail(message: str, code: int = 2) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def command(fn: F) -> F:
    """Turn library errors into one ``error: …`` line and the exit code of SPEC §6."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DurableError as exc:
            if debug:
                import traceback

                traceback.print_exc()
            raise fail(exc.message.splitlines()[0] if exc.message else type(exc).__name__,
                       exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as exc:
            if debug:
                import traceback

                traceback.print_exc()
            raise fail(f"{type(exc).__name__}: {exc}", 6) from None

    return wrapper  # type: ignore[return-value]


def read_json_argument(value: str | None, what: str) -> Any:
    """Inline JSON, ``@file`` or ``-`` (stdin); a bad value is exit 2 naming what it was."""
    import json

    if value is None:
        return None
    source = "inline"
    text = value
    if value == "-":
        source, text = "stdin", sys.stdin.read()
    elif value.startswith("@"):
        source = value[1:]
        try:
            with open(os.path.expanduser(source), encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise fail(f"cannot read {what} from {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = "" if source == "inline" else f" (from {source})"
        raise fail(f"{what} is not valid JSON{where}: {exc.msg} at line {exc.lineno} "
                   f"column {exc.colno}") from None


def parse_duration(text: str) -> float:
    """Seconds, or ``30s``, ``10m``, ``2h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise fail(f"bad duration {text!r}: use seconds or 30s, 10m, 2h, 1d") from None
    if value < 0 or value != value:
        raise fail(f"bad duration {text!r}: it must be zero or more")
    return value
