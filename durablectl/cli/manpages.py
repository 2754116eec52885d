"""Man pages from the command tree (SPEC §6): ``durablectl.1`` for the top-level commands and
``durablectl-<group>.1`` for each command group, in roff.

    python -m durablectl.cli.manpages DIR [--check]

The text comes from the click command tree that typer builds from the app, the same source
``--help`` prints (help paragraphs, option names, metavars, defaults, environment variables).
The output is deterministic (no dates), so the pages are checked in under ``man/`` and
``tests/test_man_pages.py`` fails when regenerating them would change them. ``--check`` exits 1
instead of writing when a page is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

PROG = "durablectl"
HEADER = (f'.\\" Generated from the {PROG} command tree by `make man` '
          "(python -m durablectl.cli.manpages man/).\n"
          '.\\" Do not edit: change the help texts and regenerate.\n')

# What the command tree cannot say: SPEC §6 and §7, in the words a man page uses.
OUTPUT = """\
With --json, a command prints JSON only, without colour: one object for one thing, one object per \
line for a list. On a terminal it prints tables with coloured statuses, timelines and live \
progress. Otherwise (piped or redirected) it prints the same information as plain text with no \
colour: lists as tab-separated lines under a header, and start prints the execution id alone, so \
that ID=$(durablectl start WORKFLOW) works.

Inputs and payloads are JSON given inline, as @file, or - for standard input. Durations are \
seconds, or a number followed by s, m, h or d (30s, 10m, 2h, 1d). Timestamps are ISO 8601 in UTC \
with a Z; durations in JSON are milliseconds.

An error is one line on standard error, starting with "error:" (--debug adds the traceback). A \
command that succeeded but has something to say writes one line starting with "note:", for \
instance when no daemon is running to act on what it stored."""

ENVIRONMENT = [
    ("DURABLECTL_DB", "The database file, as --db."),
    ("DURABLECTL_CONFIG", "The configuration file, as --config; otherwise ./durablectl.toml, "
                          "then durablectl.toml in the user configuration directory."),
    ("NO_COLOR", "When set, output on a terminal has no colour."),
]

EXIT_STATUS = [
    ("0", "Success; status and show exit 0 whatever the state of the execution."),
    ("1", "The execution failed or was cancelled (wait, start --wait)."),
    ("2", "Bad usage or bad input: an unknown option, invalid JSON, an action the execution's "
          "status does not allow, a bad configuration."),
    ("3", "Not found: an unknown execution, workflow or schedule."),
    ("4", "No daemon runs where one is needed."),
    ("5", "Timed out (wait --timeout)."),
    ("6", "A storage or internal error."),
]


# -- roff -------------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line starting with a control
    character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]


def _term(record_name: str) -> str:
    """``-s, --status STATUS`` as a bold option list and an italic metavar."""
    words = []
    for word in record_name.split(" "):
        comma = word.endswith(",")
        bare = word.rstrip(",")
        if not bare:
            continue
        font = "\\fB" if bare.startswith("-") else "\\fI"
        words.append(f"{font}{escape(bare)}\\fR{',' if comma else ''}")
    return " ".join(words)


def _section(title: str) -> str:
    return f'.SH "{title}"\n' if " " in title else f".SH {title}\n"


def _body(text: str) -> str:
    return "".join(f".PP\n{escape(p)}\n" for p in paragraphs(text))


def _context(command: Any, name: str, parent: Any = None) -> Any:
    """A context as the parser would make it (``-h`` comes from the root's settings)."""
    return typer.Context(command, info_name=name, parent=parent,
                         **(command.context_settings or {}))


def _usage(command: Any, ctx: Any) -> str:
    return " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])


def _parameters(command: Any, ctx: Any) -> str:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:  # hidden
            continue
        name, help_text = record
        out.append(f".TP\n{_term(name)}\n{escape(' '.join(help_text.split()))}\n")
    return "".join(out)


def _command(command: Any, ctx: Any) -> str:
    """One command as a subsection: its usage, its help, its arguments and options."""
    text = f'.SS "{escape(_usage(command, ctx))}"\n'
    help_paragraphs = paragraphs(command.help or "")
    for i, paragraph in enumerate(help_paragraphs):
        text += ("" if i == 0 else ".PP\n") + escape(paragraph) + "\n"
    return text + _parameters(command, ctx)


def _visible(group: Any) -> list[tuple[str, Any]]:
    return [(name, cmd) for name, cmd in group.commands.items() if not cmd.hidden]


def _title(name: str, summary: str, version: str) -> str:
    return (HEADER + f'.TH "{name.upper()}" 1 "" "{PROG} {version}" "{PROG} manual"\n'
            f".SH NAME\n{escape(name)} \\- {escape(_first_sentence(summary))}\n")


def _first_sentence(text: str) -> str:
    first = paragraphs(text)[0] if paragraphs(text) else ""
    return first.rstrip(".")


def _common(see_also: list[str]) -> str:
    text = _section("OUTPUT") + "".join(f".PP\n{escape(p)}\n" for p in paragraphs(OUTPUT))
    text += _section("ENVIRONMENT")
    text += "".join(f".TP\n.B {name}\n{escape(body)}\n" for name, body in ENVIRONMENT)
    text += _section("EXIT STATUS")
    text += "".join(f".TP\n.B {code}\n{escape(body)}\n" for code, body in EXIT_STATUS)
    text += _section("SEE ALSO")
    text += ",\n".join(f".BR {escape(page)} (1)" for page in see_also) + "\n"
    return text


def render_pages(app: typer.Typer | None = None) -> dict[str, str]:
    """Every page, file name -> roff text, from the app's click command tree."""
    from durablectl import __version__

    if app is None:
        from durablectl.cli.app import app as main_app

        app = main_app
    root = typer.main.get_command(app)
    root_ctx = _context(root, PROG)
    groups = [(name, cmd) for name, cmd in _visible(root) if hasattr(cmd, "commands")]
    commands = [(name, cmd) for name, cmd in _visible(root) if not hasattr(cmd, "commands")]
    group_pages = [f"{PROG}-{name}" for name, _cmd in groups]

    page = _title(PROG, root.help or "", __version__)
    page += (f"{_section('SYNOPSIS')}.B {PROG}\n.I COMMAND\n.RI [ OPTIONS ]\n.br\n"
             f".B {PROG}\n.I GROUP COMMAND\n.RI [ OPTIONS ]\n")
    page += _section("DESCRIPTION") + _body(root.help or "")
    page += (".PP\nOptions come after the command name (" + escape(f"{PROG} status ID --json")
             + "). Every command takes " + escape("--db, --config, --json and --debug")
             + ".\n")
    page += _section("COMMANDS")
    for name, cmd in commands:
        page += _command(cmd, _context(cmd, name, root_ctx))
    page += _section("COMMAND GROUPS")
    for name, cmd in groups:
        page += (f".TP\n.B {escape(f'{PROG} {name}')}\n{escape(_first_sentence(cmd.help or ''))}"
                 f". See\n.BR {escape(f'{PROG}-{name}')} (1).\n")
    page += _section("GLOBAL OPTIONS") + _parameters(root, root_ctx)
    page += _common(group_pages)
    pages = {f"{PROG}.1": page}

    for name, group in groups:
        group_ctx = _context(group, name, root_ctx)
        title = f"{PROG}-{name}"
        text = _title(title, group.help or "", __version__)
        text += (f"{_section('SYNOPSIS')}.B {PROG} {name}\n.I COMMAND\n.RI [ OPTIONS ]\n")
        text += _section("DESCRIPTION") + _body(group.help or "")
        text += _section("COMMANDS")
        for sub_name, sub in _visible(group):
            text += _command(sub, _context(sub, sub_name, group_ctx))
        text += _common([PROG, *[p for p in group_pages if p != title]])
        pages[f"{title}.1"] = text
    return pages


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 1:
        print("usage: python -m durablectl.cli.manpages DIR [--check]", file=sys.stderr)
        return 2
    folder = Path(args[0])
    pages = render_pages()
    stale = sorted(p.name for p in folder.glob(f"{PROG}*.1") if p.name not in pages) \
        if folder.is_dir() else []
    changed = [name for name, text in pages.items()
               if not (folder / name).is_file()
               or (folder / name).read_text(encoding="utf-8") != text]
    if check:
        for name in changed + stale:
            print(f"stale: {folder / name}", file=sys.stderr)
        return 1 if changed or stale else 0
    folder.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (folder / name).write_text(pages[name], encoding="utf-8")
        print(f"wrote {folder / name}")
    for name in stale:
        (folder / name).unlink()
        print(f"removed {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
