"""The typer-free half of what every command shares: the lazily opened config/store/client
(``Session``), the output mode, notes, JSON and duration arguments, and the mapping of errors to
one ``error: ...`` line and an exit code (SPEC §6).

Nothing here imports typer: the fast path of the hot read commands (``durablectl.cli.fast``)
runs on this module alone, and ``durablectl.cli.common`` adds typer's options and decorator on
top of it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from durablectl.errors import DurableError


class CommandExit(Exception):
    """End the command with ``code``; whatever it had to say is already printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


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


def fail(message: str, code: int = 2) -> CommandExit:
    """Print the one error line; raise what this returns."""
    print(f"error: {message}", file=sys.stderr)
    return CommandExit(code)


def report(exc: BaseException, debug: bool) -> int:
    """Print the one ``error: ...`` line for an exception (after its traceback with --debug)
    and return the exit code of SPEC §6."""
    if isinstance(exc, CommandExit):
        return exc.code
    if isinstance(exc, BrokenPipeError):  # `durablectl list | head`: stop quietly, as tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush into the closed pipe
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe stopped
    if isinstance(exc, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return 130
    if debug:
        import traceback

        traceback.print_exception(exc)
    from durablectl.timeline import printable

    if isinstance(exc, DurableError):
        message = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        print(f"error: {printable(message)}", file=sys.stderr)
        return exc.exit_code
    print(f"error: {type(exc).__name__}: {printable(str(exc))}", file=sys.stderr)
    return 6


def guarded(fn: Callable[[], Any], debug: bool) -> int:
    """Run a command body; its exit code (0, or the one of the error it ended with)."""
    try:
        fn()
        sys.stdout.flush()  # a closed pipe shows here, where it is reported, not at exit
    except (CommandExit, DurableError, KeyboardInterrupt, Exception) as exc:
        return report(exc, debug)
    return 0


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
