"""The records the library hands out: frozen dataclasses whose fields match the JSON of SPEC §6."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JSON = Any  # a value that survives json.dumps/json.loads


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATION_FAILED = "compensation_failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES: tuple[str, ...] = ("pending", "running", "sleeping", "waiting", "retrying")
PARKED_STATUSES: tuple[str, ...] = ("sleeping", "waiting", "retrying")
FINISHED_STATUSES: tuple[str, ...] = ("completed", "failed", "compensation_failed", "cancelled")

STEP_KINDS: tuple[str, ...] = ("step", "sleep", "signal", "emit", "note", "switch", "rollback")

# The statuses each operator action accepts (``DurableOperator``; the store checks them in the
# transaction that acts, and refuses any other with ``ExecutionStateError``). Names as in the
# CLI and the dashboard; ``running`` is left out wherever a worker's own copy of the history
# would race with the change.
OPERATOR_ACCEPTS: dict[str, tuple[str, ...]] = {
    "retry": ("failed",),
    "retry-rollback": ("compensation_failed",),
    "skip-step": ("pending", "sleeping", "waiting", "retrying", "failed", "compensation_failed"),
    "edit-state": ("pending", "sleeping", "waiting", "retrying", "failed",
                   "compensation_failed"),
    "force-fail": ACTIVE_STATUSES,
    "fork": ACTIVE_STATUSES + FINISHED_STATUSES,
}

# The ``status_reason`` prefix a worker gives an execution whose workflow it has not loaded
# (``runner.UNLOADED_REASON``): such executions wait, and the operator lists them as stuck.
UNLOADED_REASON = "workflow not loaded: "


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ErrorInfo | None:
        if data is None:
            return None
        return cls(str(data.get("type", "Error")), str(data.get("message", "")),
                   data.get("traceback"))


@dataclass(frozen=True)
class Execution:
    execution_id: str
    workflow_id: str
    status: str
    status_reason: str | None
    attempt: int
    max_attempts: int
    input: JSON
    result: JSON
    error: ErrorInfo | None
    created_at: datetime
    updated_at: datetime
    deadline: datetime | None = None
    idempotency_key: str | None = None
    forked_from: dict[str, str] | None = None
    lease_owner: str | None = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


@dataclass(frozen=True)
class StepRecord:
    step_id: str
    kind: str
    result: JSON
    error: ErrorInfo | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: float | None
    attempt: int
    seq: int = 0


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    kind: str
    execution_id: str | None
    attempt: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionDetail:
    execution: Execution
    steps: list[StepRecord]
    audit: list[AuditEntry]


@dataclass(frozen=True)
class Schedule:
    id: str
    workflow_id: str
    kind: str
    cron: str | None
    interval_seconds: float | None
    timezone: str | None
    input: JSON
    status: str
    catch_up: str
    overlap: str
    next_run: datetime | None
    last_run: datetime | None
    last_execution_id: str | None
    last_execution_status: str | None
    paused_reason: str | None
    declared: bool = False


@dataclass(frozen=True)
class ScheduleRun:
    """One tick of a schedule: ``outcome`` is started, skipped, queued or missed."""

    schedule_id: str
    due_at: datetime
    outcome: str
    execution_id: str | None
    recorded_at: datetime
    missed_count: int = 0


@dataclass(frozen=True)
class SignalResult:
    """What ``wait_for_signal`` with a ``timeout`` returns."""

    kind: str  # "signal" | "timeout"
    payload: JSON = None


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    pid: int
    hostname: str
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class Completed:
    """What ``execute_strict`` returns."""

    execution_id: str
    data: JSON


def _iso(value: datetime) -> str:
    text = value.isoformat().replace("+00:00", "Z")
    return text


def to_json(record: Any) -> Any:
    """A record (or list of them) as the JSON shape of SPEC §6: UTC timestamps with a ``Z``."""
    if isinstance(record, list):
        return [to_json(item) for item in record]
    if hasattr(record, "__dataclass_fields__"):
        return {key: _plain(value) for key, value in asdict(record).items()}
    return _plain(record)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def parse_statuses(text: str | None, *, where: str = "") -> list[str] | None:
    """A status filter as the CLI's ``--status`` and the dashboard's ``status`` take it: a
    comma list of statuses, ``active`` or ``finished`` (None: no filter). An unknown word
    raises ``ValueError`` naming it and the words accepted."""
    if not text:
        return None
    known = [s.value for s in ExecutionStatus]
    chosen: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if part == "active":
            chosen.extend(ACTIVE_STATUSES)
        elif part == "finished":
            chosen.extend(FINISHED_STATUSES)
        elif part in known:
            chosen.append(part)
        elif part:
            raise ValueError(f"unknown status {part!r}{where} (use {', '.join(known)}, "
                             "active or finished)")
    return list(dict.fromkeys(chosen)) or None
