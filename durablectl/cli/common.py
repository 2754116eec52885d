"""What every command shares: its four options, the lazily opened config/store/client, the
output mode, and the one-line error at the edge.

The typer-free part (``Session``, notes, JSON and duration arguments, error reporting) lives in
``durablectl.cli.core`` and is re-exported here; this module adds typer's options and the
``command`` decorator. Kept light: a read command imports this, typer and the store, and nothing
of the engine."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from durablectl.cli.core import CommandExit, report
from durablectl.cli.core import Session as Session  # re-exported: the commands import these here
from durablectl.cli.core import note as note
from durablectl.cli.core import parse_duration as parse_duration
from durablectl.cli.core import read_json_argument as read_json_argument

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[str | None, typer.Option(
    "--db", envvar="DURABLECTL_DB", show_envvar=True, help="The database file.")]
ConfigOption = Annotated[str | None, typer.Option(
    "--config", envvar="DURABLECTL_CONFIG", show_envvar=True,
    help="The configuration file (default: ./durablectl.toml, then the user config dir).")]
JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print JSON (an object, or JSON lines for a list).")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def command(fn: F) -> F:
    """Turn library errors into one ``error: …`` line and the exit code of SPEC §6
    (``durablectl.cli.core.report``, which the fast path uses too)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, where it is reported, not at exit
            return result
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (CommandExit, KeyboardInterrupt, Exception) as exc:
            raise typer.Exit(report(exc, debug)) from None

    return wrapper  # type: ignore[return-value]
