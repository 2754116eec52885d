"""Output in three modes (SPEC §6): JSON with ``--json``; rich tables on a terminal; plain
tab-separated text when piped. rich is imported only in the terminal mode."""

from __future__ import annotations

import json
import sys
from typing import Any

from durablectl.cli.common import Session


def emit_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False))


def emit_json_lines(rows: list[Any]) -> None:
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))


def console() -> Any:
    from rich.console import Console

    return Console()


def plain_table(header: list[str], rows: list[list[Any]]) -> None:
    print("\t".join(header))
    for row in rows:
        print("\t".join("" if v is None else str(v) for v in row))


def daemon_status(session: Session, status: dict[str, Any]) -> None:
    if session.mode == "json":
        emit_json(status)
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(status.get("executions", {}).items()))
    lines = [
        ("pid", status.get("pid")),
        ("uptime", f"{status.get('uptime_s', 0):.0f}s"),
        ("database", status.get("database")),
        ("workflows", ", ".join(status.get("workflows", [])) or "(none)"),
        ("executions", counts or "(none)"),
        ("next due", status.get("next_due") or "(nothing scheduled)"),
        ("log", status.get("log_file")),
    ]
    errors = status.get("load_errors") or []
    if errors:
        lines.append(("load errors", "; ".join(errors)))
    if session.mode == "plain":
        for key, value in lines:
            print(f"{key}\t{value}")
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in lines:
        style = "red" if key == "load errors" else None
        table.add_row(f"[bold]{key}[/bold]", str(value), style=style)
    console().print(table)


def config_show(session: Session, config: Any) -> None:
    from durablectl.config import config_items

    items = config_items(config)
    if session.mode == "json":
        emit_json({"path": None if config.path is None else str(config.path),
                   "values": {key: {"value": _plain(value), "source": source}
                              for key, value, source in items}})
        return
    if session.mode == "plain":
        plain_table(["key", "value", "source"],
                    [[key, json.dumps(_plain(value)), source] for key, value, source in items])
        return
    from rich.table import Table

    table = Table(title=f"configuration ({config.path or 'defaults'})")
    table.add_column("key")
    table.add_column("value")
    table.add_column("source", style="dim")
    for key, value, source in items:
        table.add_row(key, json.dumps(_plain(value)), source)
    console().print(table)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def stderr(message: str) -> None:
    print(message, file=sys.stderr)
