"""The timeline of an execution, shared by ``durablectl show`` and the dashboard: one row per
status change, step, sleep, signal wait and delivery, emit, switch, note, retry and operator
action, built from the audit trail. Plain data and text only; each front end styles the rows
(``style`` holds a rich style name, which the dashboard maps to CSS classes)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durablectl.model import ErrorInfo, ExecutionDetail

__all__ = [
    "PREVIEW_CHARS",
    "STATUS_STYLES",
    "TimelineRow",
    "duration_text",
    "error_line",
    "failures",
    "internal_id",
    "iso",
    "json_text",
    "preview",
    "printable",
    "timeline",
]

STATUS_STYLES: dict[str, str] = {
    "pending": "yellow",
    "running": "cyan",
    "sleeping": "blue",
    "waiting": "magenta",
    "retrying": "yellow",
    "completed": "green",
    "failed": "red",
    "compensation_failed": "bold red",
    "cancelled": "bright_black",
}
PREVIEW_CHARS = 80  # step results and payloads in a timeline row; --json has them in full


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab written as ``\\xNN``: a
    payload or an error message never reaches a terminal as an escape sequence."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    text = json_text(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def duration_text(ms: float | None) -> str:
    """Milliseconds for people: ``0.4 ms``, ``51 ms``, ``2.5 s``, ``3m 20s``, ``2h 5m``,
    ``1d 3h``."""
    if ms is None:
        return ""
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def internal_id(step_id: str | None) -> bool:
    """Ids the library makes (``__sleep:0``) or reserves (``rollback:charge``)."""
    return step_id is not None and step_id.startswith(("__", "rollback:"))


def error_line(error: ErrorInfo | None) -> str:
    return "" if error is None else f"{error.type}: {error.message}"


@dataclass(frozen=True)
class TimelineRow:
    at: datetime | None
    kind: str
    step_id: str | None
    duration_ms: float | None
    attempt: int
    detail: str
    internal: bool = False
    style: str = ""  # a status colour for status rows, red for failures


def _ms_between(earlier: datetime | None, later: datetime | None) -> float | None:
    if earlier is None or later is None:
        return None
    return round((later - earlier).total_seconds() * 1000.0, 3)


def timeline(detail: ExecutionDetail) -> list[TimelineRow]:
    """One row per status change, step, sleep, signal wait and delivery, emit, switch, note,
    retry and operator action, from the audit trail (or from the steps when audit is off)."""
    steps = {s.step_id: s for s in detail.steps}
    if not detail.audit:
        return _timeline_from_steps(detail)
    rows: list[TimelineRow] = []
    opened: dict[tuple[str, str], datetime] = {}  # (waiting kind, step id) -> when it began
    last_status_at: datetime | None = None
    for entry in detail.audit:
        data = entry.data or {}
        step_id = data.get("step_id")
        record = steps.get(step_id) if isinstance(step_id, str) else None
        kind = entry.kind
        if kind == "execution_status_changed":
            old, new, reason = data.get("from"), str(data.get("to")), data.get("reason")
            text = f"{old} → {new}" if old else new
            if reason:
                text += f": {reason}"
            rows.append(TimelineRow(entry.at, "retry" if new == "retrying" else "status", None,
                                    _ms_between(last_status_at, entry.at), entry.attempt, text,
                                    style=STATUS_STYLES.get(new, "")))
            last_status_at = entry.at
        elif kind == "step_completed":
            internal = bool(data.get("internal"))
            failed = data.get("error")
            if failed:
                text = str(failed)
                if record is not None and record.error is not None and \
                        record.attempt == entry.attempt:
                    text = error_line(record.error)
            elif record is not None and record.error is None:
                text = "→ " + preview(record.result)
            else:
                text = "ok"
            label = record.kind if record is not None and internal else "step"
            rows.append(TimelineRow(entry.at, label, step_id, data.get("duration_ms"),
                                    entry.attempt, text, internal=internal,
                                    style="red" if failed else ""))
        elif kind == "sleep_scheduled":
            opened[("sleep", str(step_id))] = entry.at
            rows.append(TimelineRow(entry.at, "sleep", step_id, None, entry.attempt,
                                    f"until {data.get('due_at')}"))
        elif kind == "sleep_completed":
            rows.append(TimelineRow(entry.at, "woke", step_id,
                                    _ms_between(opened.pop(("sleep", str(step_id)), None),
                                                entry.at), entry.attempt, "sleep over"))
        elif kind == "signal_waiting":
            opened[("signal", str(step_id))] = entry.at
            text = f"for signal {data.get('signal')}"
            if data.get("timeout_at"):
                text += f", time-out at {data.get('timeout_at')}"
            rows.append(TimelineRow(entry.at, "wait", step_id, None, entry.attempt, text))
        elif kind in ("signal_delivered", "signal_timed_out"):
            began = opened.pop(("signal", str(step_id)), None)
            if kind == "signal_delivered":
                text = f"signal {data.get('signal')} #{data.get('seq')}"
                if record is not None:
                    payload = record.result
                    if isinstance(payload, dict) and payload.get("kind") == "signal" and \
                            "payload" in payload:
                        payload = payload["payload"]
                    text += f" → {preview(payload)}"
                rows.append(TimelineRow(entry.at, "signal", step_id,
                                        _ms_between(began, entry.at), entry.attempt, text))
            else:
                rows.append(TimelineRow(entry.at, "time-out", step_id,
                                        _ms_between(began, entry.at), entry.attempt,
                                        f"no signal {data.get('signal')} in time",
                                        style="yellow"))
        elif kind == "emit_published":
            rows.append(TimelineRow(entry.at, "emit", step_id, None, entry.attempt,
                                    f"event {data.get('event')}"))
        elif kind == "switch_evaluated":
            rows.append(TimelineRow(entry.at, "switch", step_id,
                                    record.duration_ms if record is not None else None,
                                    entry.attempt, f"branch {data.get('branch')}"))
        elif kind == "note":
            text = str(data.get("message"))
            if data.get("meta") is not None:
                text += " " + preview(data.get("meta"))
            rows.append(TimelineRow(entry.at, "note", None, None, entry.attempt, text))
        elif kind == "operator_action":
            text = f"{data.get('action')} by {data.get('actor')}"
            if data.get("reason"):
                text += f": {data.get('reason')}"
            rows.append(TimelineRow(entry.at, "operator", step_id, None, entry.attempt, text,
                                    style="bold"))
        else:
            rows.append(TimelineRow(entry.at, kind, step_id if isinstance(step_id, str)
                                    else None, None, entry.attempt, preview(data)))
    return rows


def _timeline_from_steps(detail: ExecutionDetail) -> list[TimelineRow]:
    """Audit persistence off: the stored steps and the execution's status are all there is."""
    rows = [TimelineRow(detail.execution.created_at, "status", None, None, 1, "pending: created",
                        style=STATUS_STYLES["pending"])]
    for step in detail.steps:
        if step.error is not None:
            text, style = error_line(step.error), "red"
        else:
            text, style = "→ " + preview(step.result), ""
        rows.append(TimelineRow(step.completed_at or step.started_at, step.kind, step.step_id,
                                step.duration_ms, step.attempt, text,
                                internal=step.kind == "rollback", style=style))
    execution = detail.execution
    if execution.status != "pending":
        text = execution.status + (f": {execution.status_reason}"
                                   if execution.status_reason else "")
        rows.append(TimelineRow(execution.updated_at, "status", None, None, execution.attempt,
                                text, style=STATUS_STYLES.get(execution.status, "")))
    return rows


def failures(detail: ExecutionDetail) -> list[tuple[str, ErrorInfo]]:
    """Errors to print in full: failed steps still on record, then the execution's own."""
    found = [(f"step {s.step_id!r} (attempt {s.attempt})", s.error) for s in detail.steps
             if s.error is not None]
    if detail.execution.error is not None:
        found.append((f"execution {detail.execution.execution_id} "
                      f"(attempt {detail.execution.attempt})", detail.execution.error))
    return found
