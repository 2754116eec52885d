"""Run ONE execution from the top and record how the run ended: completed, parked, retrying or
failed. Knows nothing of loops, claims or processes; the runner calls it for each claim."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from durablectl import codec
from durablectl.context import (
    Abort,
    CompensationFailed,
    RunEnv,
    Suspend,
    WorkflowContext,
    error_info,
)
from durablectl.definitions import Workflow
from durablectl.errors import DurableError, PayloadError, StepFailed
from durablectl.model import ErrorInfo
from durablectl.sticky import PARKED, LiveRun
from durablectl.store.base import Claim, History

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: ``status`` is the execution's status after it (or ``aborted``)."""

    execution_id: str
    status: str
    detail: str | None = None


def _contains_suspend(exc: BaseException) -> bool:
    if isinstance(exc, Suspend):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains_suspend(inner) for inner in exc.exceptions)
    return False


def _first_control(exc: BaseException) -> BaseException | None:
    """Control-flow exceptions hidden inside an exception group (TaskGroup), most severe first."""
    if isinstance(exc, Abort | CompensationFailed):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_control(inner)
            if found is not None:
                return found
    return None


async def run_execution(env: RunEnv, workflow: Workflow, claim: Claim,
                        ctx_hook: Any = None) -> RunOutcome:
    """Run the execution under ``claim``: resume its kept run when the sticky cache holds
    one that is still current, else replay it from its stored history; record the outcome."""
    execution = claim.execution
    execution_id = execution.execution_id
    live = _resumable(env, claim, workflow)
    if live is None:
        if claim.has_history:
            history = env.load_history(execution_id)
        else:
            history = History()
            env.remember_history(execution_id, history)
        ctx = WorkflowContext(env, execution_id=execution_id,
                              workflow_id=execution.workflow_id, attempt=execution.attempt,
                              history=history)
        live = LiveRun(ctx, workflow)
        if env.sticky is not None and env.sticky.enabled:
            ctx.live = live
        live.start(workflow.fn(ctx, execution.input))
    else:
        ctx = live.ctx
        live.resume()
    if ctx_hook is not None:
        ctx_hook(ctx)
    turn = await live.turn()
    if turn == PARKED:
        return await _keep_parked(env, claim, live)
    assert live.task is not None
    outcome_kind = "completed"
    result: Any = None
    failure: BaseException | None = None
    try:
        result = live.task.result()
    except Suspend:
        outcome_kind = "parked"
    except Abort as exc:
        ctx.abort = ctx.abort or exc
    except CompensationFailed as exc:
        outcome_kind = "compensation_failed"
        failure = exc
    except BaseExceptionGroup as group:
        control = _first_control(group)
        if isinstance(control, CompensationFailed):
            outcome_kind, failure = "compensation_failed", control
        elif isinstance(control, Abort):
            ctx.abort = ctx.abort or control
        elif _contains_suspend(group) and not group.subgroup(Exception):
            outcome_kind = "parked"
        else:
            outcome_kind, failure = "error", group
    except Exception as exc:
        outcome_kind, failure = "error", exc
    finally:
        ctx.closed = True
    # let steps started alongside (asyncio.gather siblings) store their results first
    try:
        await ctx.drain()
    except BaseException:  # pragma: no cover - drain only waits on an event
        log.exception("execution %s: waiting for running steps failed", execution_id)
    outcome = await _record_outcome(env, workflow, claim, ctx, outcome_kind, result, failure)
    if outcome.status not in ("sleeping", "waiting", "pending", "retrying"):
        env.forget(execution_id)
    return outcome


def _resumable(env: RunEnv, claim: Claim, workflow: Workflow) -> LiveRun | None:
    """The kept run of this execution, if any, if it runs the workflow code loaded now (a
    reload makes new definitions), and if nothing but the step it waited for was stored since
    it parked (the claim tells, no query); otherwise it is evicted and None returned."""
    sticky = env.sticky
    if sticky is None:
        return None
    live = sticky.take(claim.execution.execution_id)
    if live is None:
        return None
    ctx = live.ctx
    # (a claim that does not say where the step counter is, -1, cannot be trusted)
    if (live.workflow is workflow and claim.execution.attempt == ctx.attempt
            and not ctx.closed and live.parked is not None and claim.step_seq >= 0
            and live.absorb(claim.step_seq, claim.fired)):
        env.remember_history(ctx.execution_id, ctx.history)
        sticky.resumed += 1
        return live
    live.evict()
    return None


async def _keep_parked(env: RunEnv, claim: Claim, live: LiveRun) -> RunOutcome:
    """Record the park exactly as a replayed run would, then keep the suspended run."""
    execution_id = live.ctx.execution_id
    try:
        outcome = await _record_park(env, claim, live.ctx)
    except BaseException:
        live.evict()  # as when a replayed run's park fails: the runner releases the execution
        raise
    assert env.sticky is not None
    env.sticky.keep(execution_id, live)
    return outcome


async def _record_park(env: RunEnv, claim: Claim, ctx: WorkflowContext) -> RunOutcome:
    """Store what the run waits for and let the execution go (kept in memory or not)."""
    waits_signal = any(t.kind == "signal" for t in ctx.park_requests)
    new_status = await env.write(
        env.store.park, execution_id=ctx.execution_id, worker_id=env.worker_id,
        status="waiting" if waits_signal else "sleeping", wakeups_seen=claim.wakeups,
        timers=list(ctx.park_requests), attempt=ctx.attempt, now=env.clock.timestamp(),
        audit=env.audit)
    return RunOutcome(ctx.execution_id, new_status)


async def _record_outcome(env: RunEnv, workflow: Workflow, claim: Claim, ctx: WorkflowContext,
                          outcome_kind: str, result: Any,
                          failure: BaseException | None) -> RunOutcome:
    execution = claim.execution
    execution_id = execution.execution_id
    if ctx.abort is not None:
        log.info("execution %s: run stopped (%s)", execution_id, ctx.abort.reason)
        return RunOutcome(execution_id, "aborted", ctx.abort.reason)
    store = env.store
    now = env.clock.timestamp()
    common = {"execution_id": execution_id, "worker_id": env.worker_id, "now": now,
              "audit": env.audit}
    if ctx.fatal is not None:
        info = error_info(ctx.fatal)
        await env.write(store.finish, status="failed", result_json=None, error=info,
                      reason=f"{info.type}: {info.message}"[:500], **common)
        return RunOutcome(execution_id, "failed", info.message)
    if outcome_kind == "completed":
        try:
            text = codec.encode(result, what=f"the result of workflow {workflow.id!r}",
                                max_bytes=env.max_payload_bytes)
        except PayloadError as exc:
            info = error_info(exc)
            await env.write(store.finish, status="failed", result_json=None, error=info,
                          reason="result is not JSON", **common)
            return RunOutcome(execution_id, "failed", info.message)
        await env.write(store.finish, status="completed", result_json=text, error=None,
                      reason=None, **common)
        return RunOutcome(execution_id, "completed")
    if outcome_kind == "parked":
        return await _record_park(env, claim, ctx)
    if outcome_kind == "compensation_failed":
        assert isinstance(failure, CompensationFailed)
        await env.write(store.finish, status="compensation_failed", result_json=None,
                      error=failure.error, reason=str(failure)[:500], **common)
        return RunOutcome(execution_id, "compensation_failed", str(failure))
    assert failure is not None
    info = _describe_failure(failure)
    retryable = not isinstance(failure, DurableError) or isinstance(failure, StepFailed)
    if retryable and execution.attempt < execution.max_attempts:
        delay = workflow.retry_backoff ** execution.attempt
        await env.write(store.schedule_retry, error=info, due_at=now + delay,
                      **common)
        return RunOutcome(execution_id, "retrying", info.message)
    await env.write(store.finish, status="failed", result_json=None, error=info,
                  reason=f"{info.type}: {info.message}"[:500], **common)
    return RunOutcome(execution_id, "failed", info.message)


def _describe_failure(failure: BaseException) -> ErrorInfo:
    return error_info(failure)
