"""``DurableClient`` and ``DurableOperator``: synchronous, store-only access for any process that
starts, signals and inspects executions without running them (a web app, a script, the CLI)."""

from __future__ import annotations

import getpass
import logging
import os
import random
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from durablectl import codec
from durablectl.clock import Clock, SystemClock, monotonic, real_time, seconds_of
from durablectl.definitions import Registry, Signal, Workflow
from durablectl.errors import (
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionNotFound,
    StorageError,
    WaitTimedOut,
    WorkflowNotFound,
)
from durablectl.model import Execution, ExecutionDetail, Schedule, WorkerInfo
from durablectl.store.base import Store

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_BACKOFF = 2.0


class _IdSource:
    """Execution ids: 40 bits of the time in milliseconds, then 56 random bits, as 24 hex
    digits. The time prefix makes ids made close together sort together, so the rows of new
    executions (their steps, audit entries and index entries, all keyed by the id) land on the
    same few B-tree pages instead of pages all over the file: fewer pages written per commit
    and a smaller WAL (the daemon benchmark ran ~12 % faster than with fully random ids). The
    random part makes a collision negligible even at thousands of starts per millisecond. The
    random bits come from a PRNG seeded by the OS once per process (``uuid4`` asks the OS every
    time, which costs more than the rest of a start)."""

    def __init__(self) -> None:
        self._pid = -1
        self._random = random.Random()

    def next(self) -> str:
        if self._pid != os.getpid():  # a forked child must not repeat its parent's ids
            self._pid = os.getpid()
            self._random = random.Random(os.urandom(32))
        millis = int(real_time() * 1000.0) & 0xFF_FFFF_FFFF  # wraps after ~35 years: harmless
        return f"{millis:010x}{self._random.getrandbits(56):014x}"


_ids = _IdSource()


def new_execution_id() -> str:
    return _ids.next()


def resolve_workflow(store: Store, registry: Registry | None,
                     ref: Workflow | str) -> tuple[str, Workflow | None, bool]:
    """An id or alias -> (concrete id, definition if loaded here, whether it is known at all).

    Known means loaded in this process or recorded by any worker in the database. When no worker
    has recorded anything yet, an unknown id is accepted and waits for a worker."""
    local = registry.resolve(ref) if registry is not None else None
    if local is not None:
        return local.id, local, True
    if isinstance(ref, Workflow):
        return ref.id, ref, True
    recorded = store.known_workflows()
    if ref in recorded:
        return ref, None, True
    for workflow_id, alias in recorded.items():
        if alias == ref:
            return workflow_id, None, True
    if recorded or (registry is not None and registry.ids()):
        known = list(recorded) + (registry.ids() if registry is not None else [])
        raise WorkflowNotFound(ref, sorted(set(known)))
    return ref, None, False


def start_arguments(
    store: Store, registry: Registry | None, ref: Workflow | str, input: Any, *,
    clock: Clock, idempotency_key: str | None, timeout: float | timedelta | None,
    max_attempts: int | None, max_payload_bytes: int,
) -> tuple[dict[str, Any], bool]:
    """The arguments of ``store.create_execution`` for a start call, and whether the workflow is
    known (False: no worker has recorded any workflow yet)."""
    workflow_id, definition, known = resolve_workflow(store, registry, ref)
    input_json = codec.encode(input, what=f"the input of workflow {workflow_id!r}",
                              max_bytes=max_payload_bytes)
    now = clock.timestamp()
    # without the definition here, a worker's recorded declaration gives the defaults
    recorded = store.workflow_defaults(workflow_id) if definition is None else None
    declared_timeout = definition.timeout if definition is not None else (
        recorded["timeout"] if recorded else None)
    timeout_s = seconds_of(timeout) if timeout is not None else declared_timeout
    if definition is not None:
        attempts = max_attempts or definition.max_attempts
        backoff = definition.retry_backoff
    else:
        attempts = max_attempts or (recorded or {}).get("max_attempts") or DEFAULT_MAX_ATTEMPTS
        backoff = (recorded or {}).get("retry_backoff") or DEFAULT_RETRY_BACKOFF
    if attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return {
        "execution_id": new_execution_id(), "workflow_id": workflow_id,
        "input_json": input_json, "max_attempts": attempts, "retry_backoff": backoff,
        "now": now, "deadline": None if timeout_s is None else now + timeout_s,
        "idempotency_key": idempotency_key,
    }, known


def outcome_of(execution: Execution) -> Any:
    """The result of a finished execution, or the error that says how it ended."""
    if execution.status == "completed":
        return execution.result
    if execution.status == "cancelled":
        raise ExecutionCancelled(execution.execution_id, execution.status_reason)
    raise ExecutionFailed(execution.execution_id, execution.error, execution.status)


def signal_id_of(signal: Signal | str) -> str:
    return signal.id if isinstance(signal, Signal) else str(signal)


class DurableClient:
    """Start, signal, cancel, wait on and inspect executions; runs nothing itself."""

    def __init__(self, store: Store, *, max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        self.clock: Clock = clock or SystemClock()
        # starts, signals and cancels go to the database's daemon when one answers, so that
        # they join its grouped commits instead of fighting its writer for the lock
        from durablectl.daemon.handoff import Handoff

        self._handoff = Handoff(store)

    def live_workers(self) -> list[WorkerInfo]:
        return self.store.live_workers()

    def _warn_without_workers(self, what: str) -> None:
        if not self.store.live_workers():
            warnings.warn(f"{what}; no worker is running, so it waits until a daemon or a "
                          "DurableService runs", stacklevel=3)

    def start_execution(self, workflow: Workflow | str, input: Any = None, *,
                        idempotency_key: str | None = None,
                        timeout: float | timedelta | None = None,
                        max_attempts: int | None = None) -> str:
        arguments, _known = start_arguments(
            self.store, None, workflow, input, clock=self.clock, idempotency_key=idempotency_key,
            timeout=timeout, max_attempts=max_attempts,
            max_payload_bytes=self.max_payload_bytes)
        try:
            answer = self._handoff.call({"op": "start", **arguments}, "start the execution")
        except self._handoff.Lost:  # the daemon died with it: it committed it or it did not
            if self.store.get_execution(arguments["execution_id"]) is not None:
                return str(arguments["execution_id"])
            answer = None
        if answer is not None:  # committed by a live daemon: a worker runs, no warning
            return str(answer["execution_id"])
        execution_id, _created = self.store.create_execution(**arguments)
        self._warn_without_workers(f"execution {execution_id} is stored")
        return execution_id

    def signal(self, execution_id: str, signal: Signal | str, payload: Any = None) -> int:
        signal_id = signal_id_of(signal)
        text = codec.encode(payload, what=f"the payload of signal {signal_id!r}",
                            max_bytes=self.max_payload_bytes)
        now = self.clock.timestamp()
        try:
            answer = self._handoff.call(
                {"op": "signal", "execution_id": execution_id, "signal_id": signal_id,
                 "payload_json": text, "now": now}, f"store signal {signal_id}")
        except self._handoff.Lost as exc:  # a signal has no identity: never send it twice
            raise StorageError(
                f"the daemon stopped while storing signal {signal_id} for execution "
                f"{execution_id}; it may or may not be stored ({exc})") from exc
        if answer is not None:
            return int(answer["seq"])
        seq = self.store.append_signal(execution_id=execution_id, signal_id=signal_id,
                                       payload_json=text, now=now)
        self._warn_without_workers(f"signal {signal_id} is stored")
        return seq

    def cancel_execution(self, execution_id: str, reason: str | None = None) -> Execution:
        now = self.clock.timestamp()
        try:
            answer = self._handoff.call({"op": "cancel", "execution_id": execution_id,
                                         "reason": reason, "now": now},
                                        f"cancel execution {execution_id}")
        except self._handoff.Lost:  # the daemon died with it: done if it is cancelled now
            found = self.store.get_execution(execution_id)
            answer = {"ok": True} if found is not None and found.status == "cancelled" \
                else None
        if answer is not None:
            cancelled = self.store.get_execution(execution_id)
            if cancelled is not None:  # committed before the answer: read it back
                return cancelled
        return self.store.cancel_execution(execution_id, reason=reason, now=now)

    def get_execution(self, execution_id: str) -> Execution | None:
        return self.store.get_execution(execution_id)

    def list_executions(self, *, status: str | Sequence[str] | None = None,
                        workflow: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[Execution]:
        return self.store.list_executions(status=status, workflow=workflow, limit=limit,
                                          offset=offset)

    def wait(self, execution_id: str, timeout: float | timedelta | None = None) -> Any:
        """Block until the execution finishes; polls with a short, growing interval."""
        limit = None if timeout is None else seconds_of(timeout)
        started = monotonic()
        interval = 0.01
        while True:
            execution = self.store.get_execution(execution_id)
            if execution is None:
                raise ExecutionNotFound(execution_id)
            if not execution.is_active:
                return outcome_of(execution)
            if limit is not None and monotonic() - started >= limit:
                raise WaitTimedOut(execution_id, limit, execution.status)
            pause = interval if limit is None else min(
                interval, max(0.0, limit - (monotonic() - started)))
            time.sleep(pause)
            interval = min(interval * 1.5, 0.25)

    def recover(self) -> int:
        """Free the executions of workers that are gone, so a live worker takes them."""
        return self.store.reap_dead_workers(real_now=real_time())

    # schedules (a daemon or a service fires them) --------------------------------------------
    def _schedules(self) -> Any:
        from durablectl.schedules import ScheduleManager

        return ScheduleManager(self.store, self.clock, max_payload_bytes=self.max_payload_bytes)

    def schedule(self, workflow: Workflow | str, input: Any = None, *, at: Any = None,
                 delay: float | timedelta | None = None) -> str:
        """A one-time schedule; returns its id."""
        schedule_id: str = self._schedules().schedule(workflow, input, at=at, delay=delay)
        return schedule_id

    def ensure_schedule(self, workflow: Workflow | str, input: Any = None, *, id: str,
                        cron: str | None = None, interval: float | timedelta | None = None,
                        timezone: str | None = None, catch_up: str | None = None,
                        overlap: str | None = None) -> Schedule:
        """Create or update a recurring schedule (idempotent)."""
        schedule: Schedule = self._schedules().ensure_schedule(
            workflow, input, id=id, cron=cron, interval=interval, timezone=timezone,
            catch_up=catch_up, overlap=overlap)
        return schedule

    def update_schedule(self, schedule_id: str, **changes: Any) -> Schedule:
        schedule: Schedule = self._schedules().update_schedule(schedule_id, **changes)
        return schedule

    def pause_schedule(self, schedule_id: str) -> Schedule:
        return self.store.pause_schedule(schedule_id, reason="operator",
                                         now=self.clock.timestamp())

    def resume_schedule(self, schedule_id: str) -> Schedule:
        schedule: Schedule = self._schedules().resume_schedule(schedule_id)
        return schedule

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.store.get_schedule(schedule_id)

    def list_schedules(self) -> list[Schedule]:
        return self.store.list_schedules()

    def remove_schedule(self, schedule_id: str) -> None:
        self.store.remove_schedule(schedule_id)


class DurableOperator:
    """Inspection and repair of executions, synchronous and on the store alone (the CLI's
    ``operator`` group and the dashboard call it, from any thread).

    Every repair is one transaction: it checks that the execution is in a status the action
    accepts (``model.OPERATOR_ACCEPTS``; otherwise ``ExecutionStateError`` naming the action,
    the status found and the statuses accepted), makes its change and records an
    ``operator_action`` audit entry with who (``actor``: the OS user unless given; the
    dashboard passes ``"dashboard"``) and why (``reason``). An unknown execution raises
    ``ExecutionNotFound``, an unknown step ``StepIdError``. An action that makes an execution
    runnable leaves it ``pending`` with no lease: the next claim of a running worker takes it
    (a daemon notices within a second; ``durablectl`` nudges it at once)."""

    def __init__(self, store: Store, *, clock: Clock | None = None,
                 max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.max_payload_bytes = max_payload_bytes

    def get_execution_detail(self, execution_id: str) -> ExecutionDetail:
        execution = self.store.get_execution(execution_id)
        if execution is None:
            raise ExecutionNotFound(execution_id)
        return ExecutionDetail(execution=execution,
                               steps=self.store.list_step_results(execution_id),
                               audit=self.store.list_audit_entries(execution_id))

    def list_executions(self, *, status: str | Sequence[str] | None = None,
                        workflow: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[Execution]:
        return self.store.list_executions(status=status, workflow=workflow, limit=limit,
                                          offset=offset)

    def list_stuck_executions(self, *, limit: int = 100) -> list[Execution]:
        """Executions that need an operator: ``failed``, ``compensation_failed``, and active
        ones that wait for a workflow no worker has loaded (``status_reason`` says which);
        the most recently changed first."""
        return self.store.list_stuck_executions(limit=limit)

    @staticmethod
    def default_actor() -> str:
        try:
            return getpass.getuser()
        except Exception:
            return "unknown"

    def _who(self, actor: str | None) -> dict[str, Any]:
        return {"actor": actor or self.default_actor(), "now": self.clock.timestamp()}

    def _value(self, value: Any, step_id: str) -> str:
        return codec.encode(value, what=f"the value for step {step_id!r}", step_id=step_id,
                            max_bytes=self.max_payload_bytes)

    def retry(self, execution_id: str, *, reason: str | None = None,
              actor: str | None = None) -> str:
        """Run a ``failed`` execution again from its last stored step, as a new attempt:
        completed steps return their stored results, failed ones run again. The retry is one
        more attempt (``max_attempts`` is raised to it when the budget was spent), so an
        exhausted execution that fails again is failed again, not retried for ever."""
        return self.store.retry_execution(execution_id, reason=reason,
                                          **self._who(actor)).execution_id

    def retry_rollback(self, execution_id: str, *, reason: str | None = None,
                       actor: str | None = None) -> str:
        """Resume a ``compensation_failed`` execution from its failed compensation: that
        compensation's failed record is removed and the execution resumes in the same
        attempt, so replay takes the same path to ``rollback()``; compensations that
        completed are not run again."""
        return self.store.retry_rollback(execution_id, reason=reason,
                                         **self._who(actor)).execution_id

    def skip_step(self, execution_id: str, step_id: str, result: Any = None, *,
                  reason: str | None = None, actor: str | None = None) -> str:
        """Record ``result`` as the outcome of ``step_id`` (a stored step, failed or not, or a
        sleep or signal wait the execution is parked on) and let the execution go on: replay
        returns ``result`` there (a signal wait returns it as the payload). A ``failed`` or
        ``retrying`` execution resumes as a new attempt, a ``compensation_failed`` one as
        ``retry_rollback`` does, a parked one at once. Refused while ``running``."""
        return self.store.skip_step(execution_id, step_id,
                                    value_json=self._value(result, step_id), reason=reason,
                                    **self._who(actor)).execution_id

    def force_fail(self, execution_id: str, reason: str | None = None, *,
                   actor: str | None = None) -> str:
        """End an active execution as ``failed`` (error ``ForceFailed`` with the reason): its
        timers are cancelled and a run in progress stops at its next durable call.
        Compensations are not run."""
        who = self._who(actor)
        message = reason or f"failed by the operator ({who['actor']})"
        return self.store.force_fail(execution_id, message=message, reason=reason,
                                     **who).execution_id

    def edit_state(self, execution_id: str, step_id: str, value: Any, *,
                   reason: str | None = None, actor: str | None = None) -> str:
        """Overwrite the stored result of ``step_id`` (a failed step becomes completed) so
        that the next replay returns ``value`` there. The status does not change: a parked
        execution sees it when it wakes, a failed one when retried. Refused while
        ``running`` and on ``completed`` or ``cancelled`` executions (fork those)."""
        return self.store.edit_step_result(execution_id, step_id,
                                           value_json=self._value(value, step_id),
                                           reason=reason, **self._who(actor)).execution_id

    def fork(self, execution_id: str, from_step: str, *, reason: str | None = None,
             actor: str | None = None) -> str:
        """Start a new execution of the same workflow and input whose history is a copy of
        the steps that started before ``from_step``: it replays those and runs ``from_step``
        and everything after it with the code loaded now. Any status; the original is left as
        it is. Returns the new execution's id (its ``forked_from`` names the original)."""
        return self.store.fork_execution(execution_id, from_step,
                                         new_execution_id=new_execution_id(), reason=reason,
                                         **self._who(actor)).execution_id
