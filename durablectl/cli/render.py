"""Output in three modes (SPEC §6): JSON with ``--json``; rich tables on a terminal; plain
tab-separated text when piped. rich is imported only in the terminal mode."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from durablectl.cli.core import Session
from durablectl.model import ErrorInfo, Execution, ExecutionDetail, to_json
from durablectl.timeline import PREVIEW_CHARS as PREVIEW_CHARS
from durablectl.timeline import STATUS_STYLES as STATUS_STYLES
from durablectl.timeline import TimelineRow as TimelineRow
from durablectl.timeline import duration_text as duration_text
from durablectl.timeline import error_line as error_line
from durablectl.timeline import failures as _failures
from durablectl.timeline import internal_id as internal_id
from durablectl.timeline import iso as iso
from durablectl.timeline import json_text as json_text
from durablectl.timeline import preview as preview
from durablectl.timeline import printable as printable
from durablectl.timeline import timeline as timeline


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
    if status.get("dashboard"):
        lines.append(("dashboard", status["dashboard"]))
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


# -- executions (start, status, show, list, wait, workflows) ----------------------------------
def rich_console() -> Any:
    """A console for data: no automatic highlighting of numbers and strings in user values.
    rich itself honours NO_COLOR (and TERM=dumb)."""
    from rich.console import Console

    return Console(highlight=False)


def tsv_cell(value: Any) -> str:
    """One tab-separated field: tabs, newlines and backslashes escaped so a row stays a line."""
    if value is None:
        return ""
    text = printable(str(value))
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r"))
    return text


def tsv(header: list[str], rows: list[list[Any]]) -> None:
    lines = ["\t".join(header)]
    lines.extend("\t".join(tsv_cell(v) for v in row) for row in rows)
    print("\n".join(lines))


def status_text(status: str, reason: str | None = None) -> Any:
    from rich.text import Text

    text = Text(printable(status), style=STATUS_STYLES.get(status, ""))
    if reason:
        text.append(f" ({printable(reason)})", style="dim")
    return text


def started(session: Session, execution_id: str) -> None:
    """``start``: the id alone, so that ``ID=$(durablectl start wf)`` works."""
    if session.mode == "json":
        emit_json({"execution_id": execution_id})
    else:
        print(execution_id, flush=True)


def _execution_fields(execution: Execution) -> list[tuple[str, str]]:
    fields = [
        ("execution", execution.execution_id),
        ("workflow", execution.workflow_id),
        ("status", execution.status),
        ("reason", execution.status_reason or ""),
        ("attempt", f"{execution.attempt}/{execution.max_attempts}"),
        ("created", iso(execution.created_at)),
        ("updated", iso(execution.updated_at)),
    ]
    if execution.deadline is not None:
        fields.append(("deadline", iso(execution.deadline)))
    if execution.idempotency_key is not None:
        fields.append(("idempotency key", execution.idempotency_key))
    if execution.forked_from:
        fields.append(("forked from", f"{execution.forked_from.get('execution_id')} at "
                                      f"{execution.forked_from.get('step_id')}"))
    fields.append(("input", json_text(execution.input)))
    if execution.status == "completed":
        fields.append(("result", json_text(execution.result)))
    if execution.error is not None:
        fields.append(("error", error_line(execution.error)))
    return fields


def _fields_table(fields: list[tuple[str, str]], execution: Execution) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields:
        if key == "status":
            table.add_row(key, status_text(value))
        elif key == "error":
            table.add_row(key, Text(printable(value), style="red"))
        elif key == "reason" and not value:
            continue
        else:
            table.add_row(key, Text(printable(value)))
    return table


def execution_status(session: Session, execution: Execution) -> None:
    """``status``: one execution."""
    if session.mode == "json":
        emit_json(to_json(execution))
        return
    fields = _execution_fields(execution)
    if session.mode == "plain":
        print("\n".join(f"{key}\t{tsv_cell(value)}" for key, value in fields))
        return
    rich_console().print(_fields_table(fields, execution))


LIST_HEADER = ["execution_id", "workflow_id", "status", "attempt", "created_at", "updated_at",
               "status_reason"]


def execution_list(session: Session, executions: list[Execution]) -> None:
    """``list``: JSON lines, a table, or tab-separated lines under a header."""
    if session.mode == "json":
        emit_json_lines([to_json(e) for e in executions])
        return
    if session.mode == "plain":
        tsv(LIST_HEADER, [[e.execution_id, e.workflow_id, e.status, e.attempt,
                           iso(e.created_at), iso(e.updated_at), e.status_reason]
                          for e in executions])
        return
    from rich.table import Table
    from rich.text import Text

    if not executions:
        rich_console().print(Text("no executions", style="dim"))
        return
    table = Table()
    table.add_column("execution")
    table.add_column("workflow")
    table.add_column("status")
    table.add_column("attempt", justify="right")
    table.add_column("created (UTC)")
    table.add_column("updated (UTC)")
    for e in executions:
        table.add_row(Text(printable(e.execution_id)), Text(printable(e.workflow_id)),
                      status_text(e.status, e.status_reason),
                      f"{e.attempt}/{e.max_attempts}", _short_time(e.created_at),
                      _short_time(e.updated_at))
    rich_console().print(table)


def _short_time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def workflow_list(session: Session, rows: list[dict[str, Any]]) -> None:
    """``workflows``: each id with its alias and how many executions are in flight on it."""
    if session.mode == "json":
        emit_json_lines(rows)
        return
    if session.mode == "plain":
        tsv(["workflow_id", "alias", "in_flight"],
            [[r["workflow_id"], r["alias"], r["in_flight"]] for r in rows])
        return
    from rich.table import Table
    from rich.text import Text

    if not rows:
        rich_console().print(Text("no workflows recorded yet (a daemon records the ones it "
                                  "loads)", style="dim"))
        return
    table = Table()
    table.add_column("workflow")
    table.add_column("alias")
    table.add_column("in flight", justify="right")
    for r in rows:
        table.add_row(Text(printable(r["workflow_id"])),
                      Text(printable(r["alias"] or ""), style="cyan"),
                      Text(str(r["in_flight"]), style="" if r["in_flight"] else "dim"))
    rich_console().print(table)


def wait_outcome(session: Session, execution: Execution) -> None:
    """After ``wait`` (and ``start --wait``): the execution object with --json; otherwise the
    result of a completed execution as JSON (a failure is the caller's error line)."""
    if session.mode == "json":
        emit_json(to_json(execution))
    elif execution.status == "completed":
        if session.mode == "rich":
            rich_console().print_json(data=execution.result)
        else:
            print(json_text(execution.result))


class WaitDisplay:
    """The live status line of ``wait`` on a terminal; nothing otherwise."""

    def __init__(self, session: Session, execution_id: str) -> None:
        self.enabled = session.mode == "rich"
        self.execution_id = execution_id
        self.workers: int | None = None  # live workers, when known: 0 gets said on the line
        self._status: Any = None

    def __enter__(self) -> WaitDisplay:
        if self.enabled:
            self._status = rich_console().status(f"waiting for {self.execution_id}",
                                                 spinner="dots")
            self._status.start()
        return self

    def update(self, execution: Execution, elapsed_s: float) -> None:
        if self._status is None:
            return
        from rich.text import Text

        line = Text(f"{execution.execution_id} ")
        line.append_text(status_text(execution.status, execution.status_reason))
        line.append(f"  attempt {execution.attempt}/{execution.max_attempts}"
                    f"  waited {duration_text(elapsed_s * 1000.0)}", style="dim")
        if self.workers == 0:
            line.append("  no daemon is running: it waits for one", style="yellow")
        self._status.update(line)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


TIMELINE_HEADER = ["at", "kind", "step_id", "duration_ms", "attempt", "detail"]


def execution_detail(session: Session, detail: ExecutionDetail) -> None:
    """``show``: the execution, then its timeline, then every error in full."""
    if session.mode == "json":
        emit_json(to_json(detail))
        return
    rows = timeline(detail)
    failures = _failures(detail)
    if session.mode == "plain":
        fields = _execution_fields(detail.execution)
        print("\n".join(f"{key}\t{tsv_cell(value)}" for key, value in fields))
        print()
        tsv(TIMELINE_HEADER, [[iso(r.at), r.kind, r.step_id,
                               "" if r.duration_ms is None else f"{r.duration_ms:g}",
                               r.attempt, r.detail] for r in rows])
        for title, error in failures:
            print()
            print(printable(f"failure of {title}: {error_line(error)}"))
            if error.traceback:
                print(printable(error.traceback.rstrip("\n")))
        return
    _rich_detail(detail, rows, failures)


def _rich_detail(detail: ExecutionDetail, rows: list[TimelineRow],
                 failures: list[tuple[str, ErrorInfo]]) -> None:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    out = rich_console()
    out.print(_fields_table(_execution_fields(detail.execution), detail.execution))
    out.print()
    table = Table(title="timeline (UTC)", title_justify="left", title_style="bold")
    table.add_column("time", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("id")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("att", justify="right")
    table.add_column("detail", overflow="fold")
    previous_day = None
    for row in rows:
        when = ""
        if row.at is not None:
            day = row.at.date()
            when = row.at.strftime("%H:%M:%S.%f")[:-3]
            if day != previous_day:
                when = row.at.strftime("%Y-%m-%d ") + when
                previous_day = day
        dim = "dim" if row.internal else ""
        step = Text(printable(row.step_id or ""),
                    style="dim" if internal_id(row.step_id) or row.internal else "")
        table.add_row(Text(when, style="dim"), Text(row.kind, style=dim or "bold"), step,
                      Text(duration_text(row.duration_ms), style=dim),
                      Text(str(row.attempt), style="dim"),
                      Text(printable(row.detail), style=dim or row.style))
    if not rows:
        table.add_row("", Text("(no history)", style="dim"), "", "", "", "")
    out.print(table)
    for title, error in failures:
        body = Text()
        body.append(printable(error_line(error)), style="bold red")
        if error.traceback:
            body.append("\n\n" + printable(error.traceback.rstrip("\n")))
        out.print(Panel(body, title=Text(printable(f"failure of {title}")), title_align="left",
                        border_style="red"))
