"""``ctx``: every durable call either returns what history holds, or runs and records, or parks.

A run starts from a history loaded in one query. A call whose id is in it returns the stored value
without I/O; otherwise it does the work and records the outcome before returning. A call that
cannot finish now (a sleep not yet due, a wait with nothing buffered) notes what it waits for and
raises :class:`Suspend`, a ``BaseException`` so a user's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from inspect import CO_COROUTINE
from types import FunctionType
from typing import TYPE_CHECKING, Any, TypeVar

from durablectl import codec
from durablectl.bridge import FutureBridge
from durablectl.clock import Clock, seconds_of, to_datetime
from durablectl.definitions import Branch, Event, Signal
from durablectl.errors import (
    DurableError,
    ExecutionCancelled,
    ExecutionFailed,
    LeaseLost,
    NonDeterminismError,
    PayloadError,
    StepFailed,
    StepIdError,
)
from durablectl.history import HistoryCache
from durablectl.model import ErrorInfo, SignalResult, StepRecord
from durablectl.store.base import History, NewTimer, Store
from durablectl.threads import StepThreads

if TYPE_CHECKING:
    from durablectl.sticky import LiveRun, StickyCache

log = logging.getLogger(__name__)

T = TypeVar("T")

RESERVED_PREFIXES = ("__", "rollback:")
STEP_RETRY_BASE_SECONDS = 0.1  # in-process step retries wait 0.1 s x 2^(n-1) ...
STEP_RETRY_MAX_SECONDS = 10.0  # ... capped; longer waits are what max_attempts is for
IMPLICIT_POLICIES = ("allow", "warn", "error")


class Suspend(BaseException):
    """Raised by a durable call that must wait; the engine parks the execution."""


class Abort(BaseException):
    """The run must stop without touching the execution: it was cancelled, timed out, failed
    elsewhere, or this worker lost its lease."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class CompensationFailed(BaseException):
    """A compensation raised: the run ends at once, ``compensation_failed``; not catchable."""

    def __init__(self, step_id: str, error: ErrorInfo) -> None:
        super().__init__(f"compensation {step_id!r} failed: {error.type}: {error.message}")
        self.step_id = step_id
        self.error = error


def fresh(value: Any) -> Any:
    """A private copy of a decoded JSON value. Stored results live on in the in-memory
    history between runs, so user code gets its own copy: mutating what a step returned must
    not change what a later replay of that step returns."""
    kind = type(value)
    if kind is dict:
        return {key: fresh(item) for key, item in value.items()}
    if kind is list:
        return [fresh(item) for item in value]
    return value


def error_info(exc: BaseException) -> ErrorInfo:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=text)


@dataclass
class RunEnv:
    """What a run needs from the service that runs it (shared by all its runs)."""

    store: Store
    clock: Clock
    worker_id: str
    executor: Executor
    audit: bool = True
    implicit_step_ids: str = "allow"
    max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES
    publish: Callable[[Event, Any], None] = lambda event, payload: None
    warned_implicit: set[str] = field(default_factory=set)
    histories: HistoryCache | None = None
    sticky: StickyCache | None = None
    _bridge: FutureBridge | None = None

    def load_history(self, execution_id: str) -> History:
        if self.histories is None:
            return self.store.load_history(execution_id)
        return self.histories.load(execution_id)

    def remember_history(self, execution_id: str, history: History) -> None:
        """Cache a history the run keeps current itself (a new execution, a resumed run)."""
        if self.histories is not None:
            self.histories.put(execution_id, history)

    def forget(self, execution_id: str) -> None:
        if self.histories is not None:
            self.histories.discard(execution_id)
        if self.sticky is not None:
            self.sticky.discard(execution_id)

    def bridge(self) -> FutureBridge:
        bridge = self._bridge
        if bridge is None or bridge.loop is not asyncio.get_running_loop():
            bridge = self._bridge = FutureBridge(self.store, asyncio.get_running_loop())
        return bridge

    def write(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        """A store write in the next grouped commit, awaitable from the event loop."""
        return self.bridge().call(method, *args, **kwargs)


def _is_async(fn: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction``, answered from the code flags for a plain function
    without attributes (a step's lambda: most calls), which is what inspect ends up reading."""
    if type(fn) is FunctionType and not fn.__dict__:
        return bool(fn.__code__.co_flags & CO_COROUTINE)
    return inspect.iscoroutinefunction(fn)


async def call_user(fn: Callable[..., Any], env: RunEnv, *args: Any) -> Any:
    """Run user code: async callables on the loop, sync ones in a thread (so they never block
    the loop); a sync callable that returns an awaitable has it awaited."""
    if _is_async(fn):
        return await fn(*args)
    threads = env.executor
    if isinstance(threads, StepThreads):
        value = await env.bridge().run(threads, fn, *args)
    else:
        value = await env.bridge().wrap(threads.submit(fn, *args))
    if inspect.isawaitable(value):
        value = await value
    return value


class StepBuilder(Coroutine[Any, Any, Any]):
    """``ctx.step(id)`` and ``ctx.step(id, fn)``: a coroutine (so ``await``, ``gather`` and
    ``TaskGroup.create_task`` all take it); ``.up(fn).down(comp)`` registers a compensation
    for ``rollback``. The step starts when it is first awaited or scheduled."""

    def __init__(self, ctx: WorkflowContext, step_id: str, fn: Callable[[], Any] | None,
                 retries: int, timeout: float | timedelta | None) -> None:
        self._ctx = ctx
        self._step_id = step_id
        self._fn = fn
        self._down: Callable[[Any], Any] | None = None
        self._retries = retries
        self._timeout = timeout
        self._inner: Coroutine[Any, Any, Any] | None = None

    def up(self, fn: Callable[[], Any]) -> StepBuilder:
        self._fn = fn
        return self

    def down(self, compensation: Callable[[Any], Any]) -> StepBuilder:
        self._down = compensation
        return self

    def _coroutine(self) -> Coroutine[Any, Any, Any]:
        if self._inner is None:
            if self._fn is None:
                raise TypeError(f"step {self._step_id!r}: give it a function, or call "
                                ".up(fn) before awaiting it")
            timeout = None if self._timeout is None else seconds_of(self._timeout)
            self._inner = self._ctx._step(self._step_id, self._fn, self._retries, timeout,
                                          self._down)
        return self._inner

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coroutine().__await__()

    def send(self, value: Any) -> Any:
        return self._coroutine().send(value)

    def throw(self, typ: Any, value: Any = None, traceback: Any = None) -> Any:
        return self._coroutine().throw(typ, value, traceback)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class WorkflowContext:
    """The ``ctx`` a workflow function receives; every method is replay-safe."""

    def __init__(self, env: RunEnv, *, execution_id: str, workflow_id: str, attempt: int,
                 history: History) -> None:
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self.attempt = attempt
        self._env = env
        self.history = history
        self.live: LiveRun | None = None  # set when the engine may keep this run parked
        self._seen: set[str] = set()
        self._counters: dict[str, int] = {}
        self._compensations: list[tuple[str, Callable[[Any], Any], Any]] = []
        self._compensated: set[str] = set()
        self.park_requests: list[NewTimer] = []
        self.fatal: BaseException | None = None
        self.abort: Abort | None = None
        self.closed = False
        self.cancel_requested = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # bookkeeping -----------------------------------------------------------------------------
    def _fail_fatal(self, exc: DurableError) -> DurableError:
        """Errors no retry can fix fail the execution even if the workflow catches them."""
        if self.fatal is None:
            self.fatal = exc
        return exc

    def _enter(self, step_id: str, kind: str) -> StepRecord | None:
        if self.closed:
            raise Suspend()
        if self.cancel_requested:
            raise self._abort(Abort("cancelled"))
        if step_id in self._seen:
            raise self._fail_fatal(StepIdError(
                f"duplicate step id {step_id!r} in one run of workflow {self.workflow_id!r}"))
        self._seen.add(step_id)
        stored = self.history.steps.get(step_id)
        if stored is not None and stored.kind != kind:
            raise self._fail_fatal(NonDeterminismError(step_id, stored.kind, kind))
        return stored

    def _abort(self, abort: Abort) -> Abort:
        if self.abort is None:
            self.abort = abort
        return abort

    def _check_user_id(self, step_id: str) -> None:
        if not isinstance(step_id, str) or not step_id:
            raise self._fail_fatal(StepIdError("a step id must be a non-empty string"))
        if step_id.startswith(RESERVED_PREFIXES):
            raise self._fail_fatal(StepIdError(
                f"step id {step_id!r} is reserved: ids may not start with '__' or 'rollback:'"))

    def _implicit(self, kind: str, key: str) -> str:
        policy = self._env.implicit_step_ids
        if policy == "error":
            raise self._fail_fatal(StepIdError(
                f"{kind} without a step_id in workflow {self.workflow_id!r}: the "
                "implicit_step_ids policy is 'error'; pass step_id=..."))
        if policy == "warn" and kind not in self._env.warned_implicit:
            self._env.warned_implicit.add(kind)
            log.warning("workflow %s: %s without a step_id gets an id from call order; "
                        "pass step_id=... so edits cannot shift history", self.workflow_id, kind)
        number = self._counters.get(key, 0)
        self._counters[key] = number + 1
        return f"{key}:{number}"

    async def _write(self, method: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await self._env.write(method, **kwargs)
        except (LeaseLost, ExecutionCancelled, ExecutionFailed) as exc:
            raise self._abort(Abort(str(exc), exc)) from exc
        except DurableError as exc:
            if isinstance(exc, PayloadError):
                raise self._fail_fatal(exc) from exc
            raise self._abort(Abort(f"storage: {exc}", exc)) from exc

    def _encode(self, value: Any, what: str, step_id: str) -> tuple[str, Any]:
        try:
            return codec.round_trip(value, what=what, step_id=step_id,
                                    max_bytes=self._env.max_payload_bytes)
        except PayloadError as exc:
            raise self._fail_fatal(exc) from exc

    async def _record(self, step_id: str, kind: str, result_json: str | None,
                      decoded: Any = None, *, error: ErrorInfo | None = None,
                      started_at: float | None = None,
                      audit_entries: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        """Store a step; ``decoded`` is the value as JSON gives it back (kept in memory)."""
        now = self._env.clock.timestamp()
        started = now if started_at is None else started_at
        seq = await self._write(
            self._env.store.record_step, execution_id=self.execution_id,
            worker_id=self._env.worker_id, step_id=step_id, kind=kind, result_json=result_json,
            error=error, attempt=self.attempt, started_at=started, completed_at=now, now=now,
            audit_entries=audit_entries, audit=self._env.audit,
        )
        self._remember(step_id, kind, fresh(decoded), error, started, now, seq)

    @property
    def inflight(self) -> int:
        """Steps (and other recorded calls) started and not yet stored."""
        return self._inflight

    def _remember(self, step_id: str, kind: str, result: Any, error: ErrorInfo | None,
                  started_at: float, completed_at: float, seq: int) -> None:
        """Keep the in-memory history as current as the database after a committed write, so
        the next wake-up of this execution loads only what others stored since."""
        self._keep(StepRecord(
            step_id=step_id, kind=kind, result=result, error=error,
            started_at=to_datetime(started_at), completed_at=to_datetime(completed_at),
            duration_ms=round((completed_at - started_at) * 1000.0, 3), attempt=self.attempt,
            seq=seq))

    def _keep(self, record: StepRecord) -> None:
        history = self.history
        history.steps[record.step_id] = record
        history.step_count = len(history.steps)
        if record.seq > history.max_seq:
            history.max_seq = record.seq

    async def drain(self) -> None:
        """Wait until every step already started has finished and stored its result."""
        while self._inflight:
            await self._idle.wait()

    def _begin(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    # steps -----------------------------------------------------------------------------------
    def step(self, step_id: str, fn: Callable[[], Any] | None = None, *, retries: int = 0,
             timeout: float | timedelta | None = None) -> StepBuilder:
        """Run ``fn`` once and store its JSON result; replay returns the stored result."""
        return StepBuilder(self, step_id, fn, retries, timeout)

    async def _step(self, step_id: str, fn: Callable[[], Any], retries: int,
                    timeout: float | None, down: Callable[[Any], Any] | None) -> Any:
        self._check_user_id(step_id)
        stored = self._enter(step_id, "step")
        if stored is not None:
            if stored.error is None:
                self._register(step_id, down, stored.result)
                return fresh(stored.result)
            if stored.attempt == self.attempt:
                raise StepFailed(step_id, stored.error.type, stored.error.message)
        self._begin()
        try:
            started = self._env.clock.timestamp()
            failure: BaseException | None = None
            for attempt_number in range(retries + 1):
                try:
                    value = await self._attempt(step_id, fn, timeout)
                except Exception as exc:
                    failure = exc
                    if attempt_number < retries:
                        delay = min(STEP_RETRY_BASE_SECONDS * 2 ** attempt_number,
                                    STEP_RETRY_MAX_SECONDS)
                        log.info("execution %s step %s attempt %d failed (%s); retrying in %.1fs",
                                 self.execution_id, step_id, attempt_number + 1, exc, delay)
                        await asyncio.sleep(delay)
                    continue
                text, decoded = self._encode(value, f"the result of step {step_id!r}", step_id)
                duration = (self._env.clock.timestamp() - started) * 1000.0
                await self._record(step_id, "step", text, decoded, started_at=started,
                                   audit_entries=[("step_completed", {
                                       "step_id": step_id, "duration_ms": round(duration, 3),
                                       "internal": False})])
                self._register(step_id, down, decoded)
                return decoded
            assert failure is not None
            info = error_info(failure)
            await self._record(step_id, "step", None, error=info, started_at=started,
                               audit_entries=[("step_completed", {
                                   "step_id": step_id, "internal": False, "error": info.type,
                                   "duration_ms": round(
                                       (self._env.clock.timestamp() - started) * 1000.0, 3)})])
            raise StepFailed(step_id, info.type, info.message) from failure
        finally:
            self._end()

    async def _attempt(self, step_id: str, fn: Callable[[], Any], timeout: float | None) -> Any:
        if timeout is None:
            return await call_user(fn, self._env)
        try:
            return await asyncio.wait_for(call_user(fn, self._env), timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"step {step_id!r} timed out after {timeout:g}s") from exc

    def _register(self, step_id: str, down: Callable[[Any], Any] | None, result: Any) -> None:
        if down is not None:
            self._compensations.append((step_id, down, fresh(result)))

    async def rollback(self) -> None:
        """Run the registered compensations in reverse order, each once, as ``rollback:<id>``."""
        if self.closed:
            raise Suspend()
        if self.cancel_requested:
            raise self._abort(Abort("cancelled"))
        for step_id, compensation, result in reversed(self._compensations):
            rollback_id = f"rollback:{step_id}"
            if rollback_id in self._compensated:
                continue
            self._compensated.add(rollback_id)
            stored = self.history.steps.get(rollback_id)
            if stored is not None and stored.kind != "rollback":
                raise self._fail_fatal(NonDeterminismError(rollback_id, stored.kind, "rollback"))
            if stored is not None and stored.error is None:
                continue
            self._begin()
            try:
                started = self._env.clock.timestamp()
                try:
                    value = await call_user(compensation, self._env, result)
                except Exception as exc:
                    info = error_info(exc)
                    await self._record(rollback_id, "rollback", None, error=info,
                                       started_at=started)
                    raise CompensationFailed(rollback_id, info) from exc
                text, decoded = self._encode(
                    value, f"the result of compensation {rollback_id!r}", rollback_id)
                await self._record(rollback_id, "rollback", text, decoded, started_at=started,
                                   audit_entries=[("step_completed", {
                                       "step_id": rollback_id, "internal": True,
                                       "duration_ms": round(
                                           (self._env.clock.timestamp() - started) * 1000, 3)})])
            finally:
                self._end()

    # time and signals ------------------------------------------------------------------------
    async def sleep(self, duration: float | timedelta, *, step_id: str | None = None) -> None:
        """A durable timer: the execution is parked and woken when it is due."""
        seconds = seconds_of(duration)
        if step_id is None:
            step_id = self._implicit("sleep", "__sleep")
        else:
            self._check_user_id(step_id)
        stored = self._enter(step_id, "sleep")
        while stored is None:
            due = self.history.timers.get(("sleep", step_id))
            if due is None:
                due = self._env.clock.timestamp() + max(seconds, 0.0)
            await self._park(NewTimer("sleep", step_id, due))
            stored = self._resumed_step(step_id, "sleep")

    async def wait_for_signal(self, signal: Signal | str, *,
                              timeout: float | timedelta | None = None,
                              step_id: str | None = None) -> Any:
        """The oldest buffered ``signal`` payload; with ``timeout`` a :class:`SignalResult`."""
        signal_id = signal.id if isinstance(signal, Signal) else str(signal)
        timeout_s = None if timeout is None else seconds_of(timeout)
        if step_id is None:
            step_id = self._implicit("signal wait", f"__signal:{signal_id}")
        else:
            self._check_user_id(step_id)
        stored = self._enter(step_id, "signal")
        while True:
            if stored is None:
                stored = await self._write(
                    self._env.store.consume_signal, execution_id=self.execution_id,
                    worker_id=self._env.worker_id, signal_id=signal_id, step_id=step_id,
                    attempt=self.attempt, now=self._env.clock.timestamp(),
                    audit=self._env.audit)
                if stored is not None:
                    self._keep(stored)
            if stored is not None:
                return self._signal_outcome(step_id, signal_id, stored.result, timeout_s)
            key = ("signal", step_id)
            if key in self.history.timers:
                due = self.history.timers[key]
            else:
                due = None if timeout_s is None else self._env.clock.timestamp() + timeout_s
            await self._park(NewTimer("signal", step_id, due, signal_id=signal_id))
            stored = self._resumed_step(step_id, "signal")

    async def _park(self, timer: NewTimer) -> None:
        """Nothing to do until ``timer`` fires or a signal comes: suspend the run. Returns
        only when the engine kept this run in memory and a later claim resumed it; the caller
        then looks at the history again (the wake-up may have been for something else)."""
        self.park_requests.append(timer)
        live = self.live
        if live is None or not live.can_hold():
            raise Suspend()
        # the park stores this due time (or keeps the pending timer it came from): a run
        # resumed for something else parks again on the same one
        self.history.timers[(timer.kind, timer.step_id)] = timer.due_at
        await live.hold(timer.kind, timer.step_id)
        if self.closed:
            raise Suspend()
        if self.cancel_requested:
            raise self._abort(Abort("cancelled"))

    def _resumed_step(self, step_id: str, kind: str) -> StepRecord | None:
        stored = self.history.steps.get(step_id)
        if stored is not None and stored.kind != kind:
            raise self._fail_fatal(NonDeterminismError(step_id, stored.kind, kind))
        return stored

    def _signal_outcome(self, step_id: str, signal_id: str, stored: Any,
                        timeout: float | None) -> Any:
        kind = stored.get("kind") if isinstance(stored, dict) else None
        if timeout is not None:
            if kind == "timeout":
                return SignalResult(kind="timeout")
            return SignalResult(kind="signal", payload=fresh(stored.get("payload")))
        if kind == "timeout":
            raise StepFailed(step_id, "TimeoutError",
                             f"the wait for signal {signal_id!r} timed out")
        return fresh(stored.get("payload")) if isinstance(stored, dict) else None

    # events, notes, branching ----------------------------------------------------------------
    async def emit(self, event: Event | str, payload: Any = None, *,
                   step_id: str | None = None) -> None:
        """Best-effort notification to subscribers, recorded once and never re-emitted."""
        event_def = event if isinstance(event, Event) else Event(str(event))
        if step_id is None:
            step_id = self._implicit("emit", f"__emit:{event_def.id}")
        else:
            self._check_user_id(step_id)
        if self._enter(step_id, "emit") is not None:
            return
        text, decoded = self._encode(payload, f"the payload of emit {step_id!r}", step_id)
        self._begin()
        try:
            await self._record(step_id, "emit", text, decoded, audit_entries=[
                ("emit_published", {"step_id": step_id, "event": event_def.id})])
        finally:
            self._end()
        self._env.publish(event_def, decoded)

    async def note(self, message: str, meta: Any = None) -> None:
        """A replay-safe audit note, written once."""
        number = self._counters.get("__note", 0)
        self._counters["__note"] = number + 1
        step_id = f"__note:{number}"
        if self._enter(step_id, "note") is not None:
            return
        text, decoded = self._encode({"message": str(message), "meta": meta},
                                     "the meta of a note", step_id)
        self._begin()
        try:
            await self._record(step_id, "note", text, decoded,
                               audit_entries=[("note", decoded)])
        finally:
            self._end()

    async def switch(self, step_id: str, value: Any, branches: Sequence[Branch],
                     default: Branch | None = None) -> Any:
        """Replay-safe branching: the chosen branch runs once; replay returns its result."""
        self._check_user_id(step_id)
        stored = self._enter(step_id, "switch")
        if stored is not None:
            return fresh(stored.result.get("result")) if isinstance(stored.result, dict) else None
        chosen: Branch | None = None
        for branch in branches:
            if branch.match is not None and branch.match(value):
                chosen = branch
                break
        if chosen is None:
            chosen = default
        if chosen is None:
            raise self._fail_fatal(DurableError(
                f"switch {step_id!r}: no branch matched {value!r} and there is no default"))
        self._begin()
        try:
            started = self._env.clock.timestamp()
            result = await call_user(chosen.run, self._env, value)
            text, decoded = self._encode({"branch": chosen.id, "result": result},
                                         f"the result of switch {step_id!r}", step_id)
            await self._record(step_id, "switch", text, decoded, started_at=started,
                               audit_entries=[("switch_evaluated", {
                                   "step_id": step_id, "branch": chosen.id})])
        finally:
            self._end()
        return decoded["result"]


