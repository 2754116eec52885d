"""The fast path of the hot commands: ``status``, ``show``, ``list``, ``wait``, ``workflows``
and ``signal`` parsed and run without importing typer.

Importing typer and building its command tree costs about 40 ms, a third of the 150 ms a read
command has to answer in (DESIGN-NOTES §7; ``make bench`` measures ``status ID --json``). A
script polling ``durablectl status ID --json`` pays it on every call, so :func:`run_fast` takes
the plain command lines of these commands (known options, the right number of arguments) and
runs the same actions as the typer commands (``durablectl.cli.actions``). Anything else — help,
an unknown or repeated option, ``--opt=value``, a missing argument, a value that does not
convert, completion — returns None and goes to typer, which parses it, or explains the error,
as it always does.

The options of these commands are declared once, in ``durablectl.cli.executions`` (typer);
:data:`COMMANDS` mirrors them for this parser, and ``tests/test_cli.py`` holds the two equal
(names, kinds, defaults), so a change to one without the other fails the tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# option -> (parameter name, kind); kind: "flag" (no value), "text" or "int"
Options = dict[str, tuple[str, str]]

COMMON: Options = {
    "--db": ("db", "text"),
    "--config": ("config", "text"),
    "--json": ("json", "flag"),
    "--debug": ("debug", "flag"),
}
COMMON_DEFAULTS: dict[str, Any] = {"db": None, "config": None, "json": False, "debug": False}

# command -> (argument names in order, its own options, their defaults)
COMMANDS: dict[str, tuple[tuple[str, ...], Options, dict[str, Any]]] = {
    "status": (("execution",), {}, {}),
    "show": (("execution",), {}, {}),
    "wait": (("execution",), {"--timeout": ("timeout", "text"), "-t": ("timeout", "text")},
             {"timeout": None}),
    "list": ((), {"--status": ("status", "text"), "-s": ("status", "text"),
                  "--workflow": ("workflow", "text"), "-w": ("workflow", "text"),
                  "--limit": ("limit", "int"), "-n": ("limit", "int"),
                  "--offset": ("offset", "int")},
             {"status": None, "workflow": None, "limit": 100, "offset": 0}),
    "workflows": ((), {}, {}),
    # the one write a script sends in a loop (a webhook relaying events to a workflow)
    "signal": (("execution", "signal"), {"--payload": ("payload", "text"),
                                         "-p": ("payload", "text")}, {"payload": None}),
}

COMPLETION_VARIABLE = "_DURABLECTL_COMPLETE"  # typer's shell completion calls us with this set


def parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """``(command, parameters)`` for a plain command line of a fast command, else None."""
    if not argv or argv[0] not in COMMANDS:
        return None
    names, own, defaults = COMMANDS[argv[0]]
    options = {**COMMON, **own}
    values: dict[str, Any] = {**COMMON_DEFAULTS, **defaults}
    given: set[str] = set()
    arguments: list[str] = []
    tokens = iter(argv[1:])
    for token in tokens:
        if not token.startswith("-") or token == "-":
            arguments.append(token)
            continue
        entry = options.get(token)  # --help, -h, --, --opt=value, unknown: typer's job
        if entry is None:
            return None
        name, kind = entry
        if name in given:
            return None
        given.add(name)
        if kind == "flag":
            values[name] = True
            continue
        raw = next(tokens, None)
        if raw is None:
            return None
        if kind == "int":
            try:
                values[name] = int(raw.strip())
            except ValueError:
                return None
        else:
            values[name] = raw
    if len(arguments) != len(names):
        return None
    values.update(zip(names, arguments, strict=True))
    return argv[0], values


def _action(command: str) -> Callable[..., None]:
    from durablectl.cli import actions

    table: dict[str, Callable[..., None]] = {
        "status": actions.status, "show": actions.show, "wait": actions.wait,
        "list": actions.list_executions, "workflows": actions.workflows,
        "signal": actions.signal,
    }
    return table[command]


def run_fast(argv: list[str]) -> int | None:
    """Run a fast command line and return its exit code; None: not one, use typer."""
    if os.environ.get(COMPLETION_VARIABLE):
        return None
    parsed = parse(argv)
    if parsed is None:
        return None
    command, values = parsed
    from durablectl.cli.core import Session, guarded

    session = Session(values.pop("db"), values.pop("config"), values.pop("json"),
                      values.pop("debug"))
    action = _action(command)
    return guarded(lambda: action(session, **values), session.debug)
