"""The command tree. Each group lives in its own module; this one assembles them and runs the
app so that every error, the parser's own included, is one ``error:`` line on stderr."""

from __future__ import annotations

import sys

import typer

from durablectl.cli import (
    config_cmds,
    daemon_cmds,
    dashboard_cmds,
    executions,
    operator_cmds,
    schedule_cmds,
    speed,
)

speed.install()  # plain options need no pydantic: start-up is a hot path

app = typer.Typer(
    name="durablectl",
    help="Durable workflows on a local SQLite file: start, signal and inspect executions, "
         "and run the daemon that drives them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
executions.register(app)
app.add_typer(schedule_cmds.app, name="schedule")
app.add_typer(operator_cmds.app, name="operator")
app.add_typer(daemon_cmds.app, name="daemon")
app.add_typer(config_cmds.app, name="config")
dashboard_cmds.register(app)


def _reflow(text: str) -> str:
    """A docstring as help text: the lines of each paragraph joined (typer's rich help keeps
    every newline, which breaks the wrapped lines of a docstring), paragraphs kept."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_help(group: typer.Typer) -> None:
    """Give every command its docstring, reflowed, as help: ``--help`` and the man pages
    (``durablectl.cli.manpages``) both read it from the command tree."""
    for info in group.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = _reflow(info.callback.__doc__)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_help(sub.typer_instance)


_reflow_help(app)


def run(argv: list[str] | None = None) -> None:
    """Run the app; parser errors become one line and exit 2."""
    try:
        result = app(args=argv, prog_name="durablectl", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # the parser's usage errors
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, not an error
            print(message)
            sys.exit(0)
        print(f"error: {message.strip().splitlines()[-1] if message.strip() else exc}",
              file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    sys.exit(result if isinstance(result, int) else 0)
