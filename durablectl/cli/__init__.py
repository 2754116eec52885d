"""The ``durablectl`` command line: typer for parsing, rich only on a terminal."""

from __future__ import annotations


def main() -> None:
    from durablectl.cli.app import run

    run()
