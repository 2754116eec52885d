"""``DurableService``: runs workflows in this process with the same loop the daemon uses.

``async with DurableService(store, workflows=[...]) as service`` registers a worker (with its
kernel lock), frees the executions of dead workers, and runs the loop until the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from durablectl import codec
from durablectl.client import outcome_of, signal_id_of, start_arguments
from durablectl.clock import Clock, SystemClock, monotonic, real_time, seconds_of
from durablectl.context import IMPLICIT_POLICIES
from durablectl.definitions import Event, Registry, Signal, Workflow
from durablectl.errors import (
    ExecutionNotFound,
    ResultTypeError,
    WaitTimedOut,
)
from durablectl.events import DurableEventRecord, durable_events
from durablectl.history import DEFAULT_CACHE_SIZE
from durablectl.model import AuditEntry, Completed, Execution, ExecutionStatus, Schedule
from durablectl.runner import UNLOADED_REASON, Runner
from durablectl.schedules import UNDECLARED, ScheduleManager
from durablectl.store.base import Store

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]


class DurableService:
    """A worker: runs the executions of the workflows it is given."""

    def __init__(
        self, store: Store, workflows: Iterable[Workflow] = (), *, worker_id: str | None = None,
        audit: bool = True, clock: Clock | None = None, concurrency: int = 100,
        lease_seconds: float = 30, grace_seconds: float = 10,
        implicit_step_ids: str = "allow", cache_size: int = DEFAULT_CACHE_SIZE,
        max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES, catch_up: str = "one",
        overlap: str = "allow", misfire_grace_seconds: float = 60, max_catch_up: int = 100,
    ) -> None:
        if implicit_step_ids not in IMPLICIT_POLICIES:
            raise ValueError(f"implicit_step_ids must be one of {', '.join(IMPLICIT_POLICIES)}")
        self.store = store
        self.registry = Registry(workflows)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-" \
                                      f"{uuid.uuid4().hex[:6]}"
        self.clock: Clock = clock or SystemClock()
        self.audit = audit
        self.grace_seconds = float(grace_seconds)
        self.max_payload_bytes = max_payload_bytes
        self.cache_size = int(cache_size)
        self.catch_up = catch_up
        self.overlap = overlap
        self.misfire_grace_seconds = misfire_grace_seconds
        self.max_catch_up = max_catch_up
        self.schedules = ScheduleManager(store, self.clock, registry=self.registry,
                                         catch_up=catch_up, overlap=overlap,
                                         max_payload_bytes=max_payload_bytes)
        self.runner = Runner(store, self.registry, worker_id=self.worker_id, clock=self.clock,
                             concurrency=concurrency, lease_seconds=lease_seconds, audit=audit,
                             implicit_step_ids=implicit_step_ids,
                             max_payload_bytes=max_payload_bytes, cache_size=self.cache_size,
                             publish=self._publish)
        self.runner.schedule_options = {"misfire_grace_seconds": float(misfire_grace_seconds),
                                         "max_catch_up": int(max_catch_up)}
        self._handlers: dict[str, list[Handler]] = {}
        self._handler_tasks: set[asyncio.Future[None]] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._started = False
        self._waiter_poll: asyncio.Task[None] | None = None

    # lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> DurableService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._remove_listener = self.store.add_commit_listener(
            self._on_commit, wanted=self._wants_commits)
        self.store.register_worker(worker_id=self.worker_id, pid=os.getpid(),
                                   hostname=socket.gethostname(), real_now=real_time())
        self.store.record_workflows(
            worker_id=self.worker_id,
            workflows=[(wf.id, wf.alias, wf.max_attempts, wf.retry_backoff, wf.timeout)
                       for wf in self.registry.all()],
            now=self.clock.timestamp())
        self.sync_declared_schedules()
        await self.recover()
        self._started = True
        self._loop_task = self._loop.create_task(self.runner.run_forever())
        log.info("worker %s started with %d workflows", self.worker_id, len(self.registry.ids()))

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.runner.stop(self.grace_seconds)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        try:
            self.store.unregister_worker(self.worker_id)
        except Exception:
            log.exception("worker %s: could not unregister", self.worker_id)
        if self._remove_listener is not None:
            self._remove_listener()
        log.info("worker %s stopped", self.worker_id)

    # starting and waiting --------------------------------------------------------------------
    async def _write(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await self.runner.env.write(method, *args, **kwargs)

    async def start_execution(self, workflow: Workflow | str, input: Any = None, *,
                              idempotency_key: str | None = None,
                              timeout: float | timedelta | None = None,
                              max_attempts: int | None = None) -> str:
        """Store a new execution (or find the one with this idempotency key) and return its id
        once it is committed."""
        arguments, _known = start_arguments(
            self.store, self.registry, workflow, input, clock=self.clock,
            idempotency_key=idempotency_key, timeout=timeout, max_attempts=max_attempts,
            max_payload_bytes=self.max_payload_bytes)
        execution_id, _created = await self._write(self.store.create_execution,
                                                   audit=self.audit, **arguments)
        self.runner.wake()
        return str(execution_id)

    async def wait(self, execution_id: str, timeout: float | timedelta | None = None) -> Any:
        """The result of the execution once it finishes; raises as ``execute`` does."""
        limit = None if timeout is None else seconds_of(timeout)
        deadline = None if limit is None else monotonic() + limit
        loop = asyncio.get_running_loop()
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(execution_id, []).append(future)
            try:
                execution = self.store.get_execution(execution_id)
                if execution is None:
                    raise ExecutionNotFound(execution_id)
                if not execution.is_active:
                    return outcome_of(execution)
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimedOut(execution_id, float(limit or 0), execution.status)
                # woken by this process's commit of the end, or by the shared poll that sees
                # another process's; then read it again
                self._poll_waiters_soon(loop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), remaining)
            finally:
                waiters = self._waiters.get(execution_id, [])
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._waiters.pop(execution_id, None)

    def _poll_waiters_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._waiter_poll is None or self._waiter_poll.done():
            self._waiter_poll = loop.create_task(self._poll_waiters())

    async def _poll_waiters(self) -> None:
        """While anyone waits: every WAIT_POLL_SECONDS, one read tells which waited-for
        executions ended (another process may have finished them, and no commit of ours
        says so). One query for all waiters, not one per waiter: ten thousand concurrent
        ``execute`` calls would otherwise be twenty thousand reads a second on the loop."""
        while self._waiters:
            await asyncio.sleep(WAIT_POLL_SECONDS)
            try:
                ended = self.store.ended_among(list(self._waiters))
            except Exception:  # every waiter reads for itself and meets the error there
                ended = set(self._waiters)
            for execution_id in ended:
                for future in self._waiters.get(execution_id, []):
                    if not future.done():
                        future.set_result(None)

    async def execute(self, workflow: Workflow | str, input: Any = None, *,
                      wait_timeout: float | timedelta | None = None,
                      **start_options: Any) -> Any:
        execution_id = await self.start_execution(workflow, input, **start_options)
        return await self.wait(execution_id, wait_timeout)

    async def execute_strict(self, workflow: Workflow | str, input: Any = None, *,
                             wait_timeout: float | timedelta | None = None,
                             **start_options: Any) -> Completed:
        """Like ``execute``, and the result must match the top level of the workflow's return
        annotation."""
        definition = self.registry.require(workflow)
        execution_id = await self.start_execution(definition, input, **start_options)
        data = await self.wait(execution_id, wait_timeout)
        _check_result_type(definition, data)
        return Completed(execution_id=execution_id, data=data)

    # signals, cancellation, recovery ---------------------------------------------------------
    async def signal(self, execution_id: str, signal: Signal | str, payload: Any = None) -> int:
        signal_id = signal_id_of(signal)
        text = codec.encode(payload, what=f"the payload of signal {signal_id!r}",
                            max_bytes=self.max_payload_bytes)
        if self._started and self.runner.has_room():
            seq, claim = await self._write(
                self.store.signal_and_claim, execution_id=execution_id, signal_id=signal_id,
                payload_json=text, now=self.clock.timestamp(), worker_id=self.worker_id,
                workflow_ids=self.registry.ids(), lease_until=self.runner.lease_until(),
                audit=self.audit)
            if claim is not None:
                self.runner.adopt(claim)
                return int(seq)
        else:
            seq = await self._write(self.store.append_signal, execution_id=execution_id,
                                    signal_id=signal_id, payload_json=text,
                                    now=self.clock.timestamp())
        self.runner.wake()
        return int(seq)

    async def cancel_execution(self, execution_id: str, reason: str | None = None) -> Execution:
        execution: Execution = await self._write(
            self.store.cancel_execution, execution_id, reason=reason,
            now=self.clock.timestamp(), audit=self.audit)
        self.runner.request_cancel(execution_id)
        return execution

    async def recover(self) -> int:
        """Free the executions of dead workers so that live ones (this one first) run them."""
        freed = self.store.reap_dead_workers(real_now=real_time())
        self.store.mark_unloaded(workflow_ids=self.registry.ids(),
                                 reason_prefix=UNLOADED_REASON)
        self.runner.wake()
        return freed

    # schedules -------------------------------------------------------------------------------
    def sync_declared_schedules(self, *, pause_undeclared: bool = False) -> None:
        """Ensure the schedules declared with ``@workflow(..., schedule=)``; with
        ``pause_undeclared`` (the daemon, on load and reload) pause declared schedules whose
        declaration or workflow is gone, and say so."""
        for wf in self.registry.all():
            spec = wf.schedule
            if spec is None:
                continue
            self.schedules.ensure_schedule(
                wf, None, id=wf.id, cron=spec.cron, interval=spec.interval_seconds,
                timezone=spec.timezone, catch_up=spec.catch_up, overlap=spec.overlap,
                declared=True, resume_undeclared=True)
        if pause_undeclared:
            for schedule in self.store.list_schedules():
                owner = self.registry.get(schedule.workflow_id)
                if schedule.declared and schedule.status == "active" and (
                        owner is None or owner.schedule is None):
                    self.schedules.pause_schedule(schedule.id, reason=UNDECLARED)
                    log.warning("schedule %s paused: its declaration is gone (declare it "
                                "again to resume it)", schedule.id)
        self.runner.wake(claim=False)

    async def schedule(self, workflow: Workflow | str, input: Any = None, *,
                       at: datetime | None = None, delay: float | timedelta | None = None,
                       ) -> str:
        """A one-time schedule; returns its id."""
        schedule_id = self.schedules.schedule(workflow, input, at=at, delay=delay)
        self.runner.wake(claim=False)
        return schedule_id

    async def ensure_schedule(self, workflow: Workflow | str, input: Any = None, *, id: str,
                              cron: str | None = None,
                              interval: float | timedelta | None = None,
                              timezone: str | None = None, catch_up: str | None = None,
                              overlap: str | None = None) -> Schedule:
        """Create or update a recurring schedule (idempotent)."""
        schedule = self.schedules.ensure_schedule(
            workflow, input, id=id, cron=cron, interval=interval, timezone=timezone,
            catch_up=catch_up, overlap=overlap)
        self.runner.wake(claim=False)
        return schedule

    async def update_schedule(self, schedule_id: str, **changes: Any) -> Schedule:
        """Change any of cron, interval, input, timezone, catch_up, overlap; re-arms."""
        schedule = self.schedules.update_schedule(schedule_id, **changes)
        self.runner.wake(claim=False)
        return schedule

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return self.schedules.pause_schedule(schedule_id)

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        schedule = self.schedules.resume_schedule(schedule_id)
        self.runner.wake(claim=False)
        return schedule

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.schedules.get_schedule(schedule_id)

    async def list_schedules(self) -> list[Schedule]:
        return self.schedules.list_schedules()

    async def remove_schedule(self, schedule_id: str) -> None:
        self.schedules.remove_schedule(schedule_id)

    # inspection ------------------------------------------------------------------------------
    def get_execution(self, execution_id: str) -> Execution | None:
        return self.store.get_execution(execution_id)

    def list_executions(self, *, status: str | Sequence[str] | None = None,
                        workflow: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[Execution]:
        return self.store.list_executions(status=status, workflow=workflow, limit=limit,
                                          offset=offset)

    # events ----------------------------------------------------------------------------------
    def on(self, event: Event | str, handler: Handler) -> Callable[[], None]:
        """Subscribe to an emitted ``Event`` or to a ``durable_events`` kind."""
        key = f"event:{event.id}" if isinstance(event, Event) else f"durable:{event}"
        if not isinstance(event, Event) and event not in durable_events.ALL:
            raise ValueError(f"unknown durable event {event!r}")
        self._handlers.setdefault(key, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(key, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    def on_any_event(self, handler: Callable[[Event, Any], Any]) -> Callable[[], None]:
        """Subscribe to every emitted event, whatever its id: ``handler(event, payload)`` (sync
        or async) is called once per emit with the ``Event`` and its payload, like an ``on``
        subscriber (never on replay; one that raises is logged and ignored). Returns a function
        that unsubscribes. Durable events need no such call: ``on(durable_events.
        audit_appended, ...)`` already gets every kind."""
        handlers = self._handlers.setdefault(_ANY_EVENT, [])
        subscriber = typing.cast(Handler, handler)  # called with two arguments (_publish)
        handlers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in handlers:
                handlers.remove(subscriber)

        return unsubscribe

    def _publish(self, event: Event, payload: Any) -> None:
        self._dispatch(f"event:{event.id}", payload)
        self._dispatch(_ANY_EVENT, event, payload)

    def _dispatch(self, key: str, *arguments: Any) -> None:
        for handler in list(self._handlers.get(key, ())):
            try:
                value = handler(*arguments)
                if inspect.isawaitable(value):
                    task = asyncio.ensure_future(_guard(value, key))
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_tasks.discard)
            except Exception:
                log.exception("subscriber to %s raised; ignored", key)

    def _wants_commits(self) -> bool:
        """Entries matter to subscribers and to waiters only (asked after each commit)."""
        return bool(self._handlers or self._waiters)

    def _on_commit(self, entries: list[AuditEntry]) -> None:
        """Called by the store after each commit (from its writer thread). Wakes the loop only
        when there is something to deliver: with no subscriber, only the end of an execution
        someone waits for (thousands of commits a second would otherwise each cost the loop a
        wake-up). A waiter registers before it reads the execution, so one that registers just
        after this check reads the committed status itself."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if not self._handlers and not any(self._ends_awaited(entry) for entry in entries):
            return
        loop.call_soon_threadsafe(self._deliver, entries)

    def _ends_awaited(self, entry: AuditEntry) -> bool:
        """The entry records the end of an execution someone here waits for."""
        return (entry.kind == "execution_status_changed" and entry.execution_id in self._waiters
                and entry.data.get("to") in _FINISHED)

    def _deliver(self, entries: list[AuditEntry]) -> None:
        for entry in entries:
            if self._ends_awaited(entry):
                for future in self._waiters.get(str(entry.execution_id), []):
                    if not future.done():
                        future.set_result(None)
            if not self._handlers:
                continue
            record = DurableEventRecord(kind=entry.kind, execution_id=entry.execution_id,
                                        data=entry.data)
            self._dispatch(f"durable:{durable_events.audit_appended}", record)
            self._dispatch(f"durable:{entry.kind}", record)


WAIT_POLL_SECONDS = 0.5  # how soon wait() sees an end committed by another process
_ANY_EVENT = "any-event"  # on_any_event subscribers (other keys are event:... or durable:...)
_FINISHED = {s.value for s in ExecutionStatus} - {"pending", "running", "sleeping", "waiting",
                                                   "retrying"}


async def _guard(awaitable: Awaitable[Any], key: str) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("subscriber to %s raised; ignored", key)


_TYPE_NAMES: dict[Any, tuple[type, ...]] = {
    dict: (dict,), list: (list,), str: (str,), int: (int,), float: (float, int), bool: (bool,),
    None: (type(None),), type(None): (type(None),),
}


def _check_result_type(workflow: Workflow, data: Any) -> None:
    try:
        hints = typing.get_type_hints(workflow.fn)
    except Exception:
        hints = getattr(workflow.fn, "__annotations__", {})
    if "return" not in hints:
        return
    annotation = hints["return"]
    origin = typing.get_origin(annotation) or annotation
    if isinstance(origin, type) and (typing.is_typeddict(origin) or
                                     hasattr(origin, "__dataclass_fields__")):
        expected: tuple[type, ...] = (dict,)
    elif origin in _TYPE_NAMES:
        expected = _TYPE_NAMES[origin]
    else:
        return
    ok = isinstance(data, expected) and not (
        isinstance(data, bool) and bool not in expected)
    if not ok:
        names = "/".join(t.__name__ for t in expected)
        raise ResultTypeError(
            f"workflow {workflow.id!r} returned {type(data).__name__}, but its return "
            f"annotation says {names}")
