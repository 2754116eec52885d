"""Commands on executions: start, signal, status, show, list, wait, cancel, recover,
workflows."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
