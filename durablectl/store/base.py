"""The store contract: the only way the engine, client and operator touch persistence.

Methods are synchronous and thread-safe and need no event loop. ``submit(method, ...)`` runs any
write method of the store as a job whose future resolves after its commit, so that a store can
group the writes of many executions into one commit; ``submit_to(sink, method, ...)`` does the
same with the outcome handed to ``sink`` (the event loop's bridge: no future per write). A
store that cannot group may simply run the method in a thread. Times passed in are epoch
seconds: ``now`` is workflow (clock) time, ``real_now`` is wall time for leases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from durablectl.model import (
    AuditEntry,
    ErrorInfo,
    Execution,
    Schedule,
    ScheduleRun,
    StepRecord,
    WorkerInfo,
)

T = TypeVar("T")

CommitListener = Callable[[list[AuditEntry]], None]


class JobSink(Protocol):
    """Where a grouped write's outcome goes: the part of ``concurrent.futures.Future`` the
    writer uses. ``set_running_or_notify_cancel`` False means the caller gave up before the
    job started: it is dropped unrun."""

    def set_running_or_notify_cancel(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException | None, /) -> None: ...

    def done(self) -> bool: ...


@dataclass(frozen=True)
class NewTimer:
    """A timer a parking execution asks for: a sleep or a signal wait (``due_at`` None: no
    time-out)."""

    kind: str  # "sleep" | "signal"
    step_id: str
    due_at: float | None
    signal_id: str | None = None


@dataclass(frozen=True)
class ScheduleDefinition:
    """What a schedule is, as ``ensure_schedule`` compares it (status and times aside)."""

    id: str
    workflow_id: str
    kind: str  # "once" | "cron" | "interval"
    cron: str | None
    interval_seconds: float | None
    timezone: str | None
    input_json: str | None
    catch_up: str
    overlap: str
    declared: bool = False


@dataclass(frozen=True)
class SchedulePlan:
    """What a due schedule does now: the ticks to run, the missed ones (count and newest),
    and the next tick to arm (None: a one-time schedule is done)."""

    run: tuple[float, ...]
    missed: tuple[int, float] | None
    next_due: float | None


@dataclass(frozen=True)
class Claim:
    """An execution this worker now holds the lease of, with the wake-up counter it saw."""

    execution: Execution
    wakeups: int
    has_history: bool = True  # False: no step and no timer yet, nothing to load
    # the execution's step counter after the claim (-1: not known) and the steps the claim
    # itself stored (a fired sleep, a timed-out wait): a run kept in memory that saw every
    # step up to ``step_seq`` minus these resumes without reading the history again
    step_seq: int = -1
    fired: tuple[StepRecord, ...] = ()


@dataclass
class History:
    """Everything a run needs, loaded once per wake-up."""

    steps: dict[str, StepRecord] = field(default_factory=dict)
    timers: dict[tuple[str, str], float | None] = field(default_factory=dict)
    step_count: int = 0  # all stored steps of the execution, even when ``steps`` is a delta
    max_seq: int = 0


class Store(Protocol):
    # lifecycle -------------------------------------------------------------------------------
    def close(self) -> None: ...

    def submit(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def submit_to(self, sink: JobSink, method: Callable[..., Any], /, *args: Any,
                  **kwargs: Any) -> None: ...

    def add_commit_listener(self, listener: CommitListener, *,
                            wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        """``listener`` hears the audit entries of every commit (from the committing thread);
        ``wanted``, asked after each commit, lets a listener with nothing to do spare the store
        making the entries."""
        ...

    def data_version(self) -> int: ...

    # executions ------------------------------------------------------------------------------
    def create_execution(
        self, *, execution_id: str, workflow_id: str, input_json: str | None,
        max_attempts: int, retry_backoff: float, now: float, deadline: float | None = None,
        idempotency_key: str | None = None, audit: bool = True,
    ) -> tuple[str, bool]: ...

    def create_and_claim(
        self, *, execution_id: str, workflow_id: str, input_json: str | None,
        max_attempts: int, retry_backoff: float, now: float, worker_id: str,
        lease_until: float, deadline: float | None = None, idempotency_key: str | None = None,
        audit: bool = True,
    ) -> tuple[str, bool, Claim | None]:
        """A new execution stored already claimed by ``worker_id`` (a daemon taking a start it
        has room for): one write instead of a create and a claim."""
        ...

    def get_execution(self, execution_id: str) -> Execution | None: ...

    def execution_version(self, execution_id: str) -> str | None:
        """Changes whenever the execution, its steps or its audit trail may have changed;
        None for an unknown execution."""
        ...

    def list_executions(
        self, *, status: str | Sequence[str] | None = None, workflow: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[Execution]: ...

    def count_executions(self) -> dict[str, int]: ...

    def count_in_flight(self) -> dict[str, int]:
        """Active executions (not finished) per workflow id; ids with none are left out."""
        ...

    def list_step_results(self, execution_id: str) -> list[StepRecord]: ...

    def list_audit_entries(
        self, execution_id: str, *, limit: int | None = None, offset: int = 0
    ) -> list[AuditEntry]: ...

    def load_history(self, execution_id: str, *, after_seq: int = 0) -> History: ...

    def ended_among(self, execution_ids: Sequence[str]) -> set[str]: ...

    # running ---------------------------------------------------------------------------------
    def claim_ready(
        self, *, worker_id: str, workflow_ids: Sequence[str], now: float, real_now: float,
        lease_until: float, limit: int, audit: bool = True,
    ) -> list[Claim]: ...

    def claim_execution(
        self, execution_id: str, *, worker_id: str, workflow_ids: Sequence[str], now: float,
        real_now: float, lease_until: float, audit: bool = True,
    ) -> Claim | None: ...

    def record_step(
        self, *, execution_id: str, worker_id: str, step_id: str, kind: str,
        result_json: str | None, error: ErrorInfo | None, attempt: int,
        started_at: float | None, completed_at: float, now: float,
        audit_entries: Sequence[tuple[str, dict[str, Any]]] = (), audit: bool = True,
    ) -> int: ...

    def consume_signal(
        self, *, execution_id: str, worker_id: str, signal_id: str, step_id: str,
        attempt: int, now: float, audit: bool = True,
    ) -> StepRecord | None: ...

    def park(
        self, *, execution_id: str, worker_id: str, status: str, wakeups_seen: int,
        timers: Sequence[NewTimer], attempt: int, now: float, audit: bool = True,
    ) -> str: ...

    def finish(
        self, *, execution_id: str, worker_id: str, status: str, result_json: str | None,
        error: ErrorInfo | None, reason: str | None, now: float, audit: bool = True,
    ) -> bool: ...

    def schedule_retry(
        self, *, execution_id: str, worker_id: str, error: ErrorInfo, due_at: float,
        now: float, audit: bool = True,
    ) -> bool: ...

    def release(self, execution_id: str, *, worker_id: str, status_reason: str | None = None,
                ) -> None: ...

    def fire_due_timers(
        self, *, worker_id: str, workflow_ids: Sequence[str], now: float, real_now: float,
        lease_until: float, limit: int, audit: bool = True,
    ) -> list[Claim]: ...

    def next_due_at(self) -> float | None: ...

    def heartbeat(self, *, worker_id: str, real_now: float, lease_until: float) -> int: ...

    def mark_unloaded(self, *, workflow_ids: Sequence[str], reason_prefix: str) -> int: ...

    # signals and cancellation ----------------------------------------------------------------
    def append_signal(
        self, *, execution_id: str, signal_id: str, payload_json: str | None, now: float,
    ) -> int: ...

    def signal_and_claim(
        self, *, execution_id: str, signal_id: str, payload_json: str | None, now: float,
        worker_id: str, workflow_ids: Sequence[str], lease_until: float, audit: bool = True,
    ) -> tuple[int, Claim | None]: ...

    def cancel_execution(
        self, execution_id: str, *, reason: str | None, now: float, audit: bool = True
    ) -> Execution: ...

    # workers and workflows -------------------------------------------------------------------
    def register_worker(self, *, worker_id: str, pid: int, hostname: str,
                        real_now: float) -> None: ...

    def unregister_worker(self, worker_id: str) -> None: ...

    def list_workers(self) -> list[WorkerInfo]: ...

    def live_workers(self) -> list[WorkerInfo]: ...

    def reap_dead_workers(self, *, real_now: float) -> int: ...

    def record_workflows(
        self, *, worker_id: str, workflows: Sequence[tuple[Any, ...]], now: float
    ) -> None: ...

    def workflow_defaults(self, workflow_id: str) -> dict[str, Any] | None: ...

    def known_workflows(self) -> dict[str, str | None]: ...

    # operator repairs (DurableOperator) --------------------------------------------------------
    # Each checks, in its own transaction, that the execution is in a status the action accepts
    # (``model.OPERATOR_ACCEPTS``: else ``ExecutionStateError``; an unknown id is
    # ``ExecutionNotFound``, an unknown step ``StepIdError``), and writes an ``operator_action``
    # audit entry (``action``, ``actor``, ``reason``, ``step_id``) with its change. A changed
    # step row gets a new ``seq`` and removed ones go, so a cached history sees the change.
    # ``value_json`` is the JSON the replayed call returns. They return the execution as it is
    # after the change (``fork_execution``: the new one).
    def list_stuck_executions(self, *, limit: int = 100) -> list[Execution]:
        """Failed, compensation_failed, and active executions whose workflow no worker has
        loaded; the most recently changed first."""
        ...

    def retry_execution(self, execution_id: str, *, actor: str, reason: str | None,
                        now: float) -> Execution: ...

    def retry_rollback(self, execution_id: str, *, actor: str, reason: str | None,
                       now: float) -> Execution: ...

    def skip_step(self, execution_id: str, step_id: str, *, value_json: str, actor: str,
                  reason: str | None, now: float) -> Execution: ...

    def edit_step_result(self, execution_id: str, step_id: str, *, value_json: str, actor: str,
                         reason: str | None, now: float) -> Execution: ...

    def force_fail(self, execution_id: str, *, message: str, actor: str, reason: str | None,
                   now: float) -> Execution: ...

    def fork_execution(self, execution_id: str, from_step: str, *, new_execution_id: str,
                       actor: str, reason: str | None, now: float) -> Execution: ...

    # schedules -------------------------------------------------------------------------------
    def ensure_schedule(self, definition: ScheduleDefinition, *, next_run: float | None,
                        now: float, resume_undeclared: bool = False
                        ) -> tuple[Schedule, bool]: ...

    def get_schedule(self, schedule_id: str) -> Schedule | None: ...

    def list_schedules(self) -> list[Schedule]: ...

    def pause_schedule(self, schedule_id: str, *, reason: str, now: float) -> Schedule: ...

    def resume_schedule(self, schedule_id: str, *, next_run: float | None, now: float,
                        only_reason: str | None = None) -> Schedule: ...

    def remove_schedule(self, schedule_id: str) -> None: ...

    def list_schedule_runs(self, schedule_id: str, *, limit: int = 100) -> list[ScheduleRun]: ...

    def has_queued_schedule_runs(self) -> bool: ...

    def fire_schedules(
        self, *, now: float, limit: int, plan: Callable[[Schedule, float], SchedulePlan],
        new_execution: Callable[[Schedule, float], dict[str, Any]], audit: bool = True,
    ) -> list[str]: ...

    # retention -------------------------------------------------------------------------------
    def prune_executions(self, *, older_than: float, statuses: Sequence[str],
                         batch: int = 50, budget_s: float = 0.010) -> int: ...

    def vacuum(self) -> None: ...

    # small facts a daemon records for other processes (its pid and socket) ------------------
    def set_meta(self, key: str, value: str | None) -> None: ...

    def get_meta(self, key: str) -> str | None: ...
