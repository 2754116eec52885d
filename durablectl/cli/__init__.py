"""The ``durablectl`` command line: typer for parsing, rich only on a terminal.

The hot read commands (``status``, ``show``, ``list``, ``wait``, ``workflows``) take a fast
path without typer when their command line is a plain one (``durablectl.cli.fast``); everything
else, help and errors included, goes through the typer app."""

from __future__ import annotations


def main() -> None:
    import sys

    from durablectl.cli.fast import run_fast

    code = run_fast(sys.argv[1:])
    if code is not None:
        sys.exit(code)

    from durablectl.cli.app import run

    run()
