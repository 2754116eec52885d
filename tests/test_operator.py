"""The operator's repairs (SPEC §4): retry, retry_rollback, skip_step, edit_state, force_fail,
fork and the stuck list, on a real SQLite file.

Where an execution must make progress, a ``DurableService`` with a fake clock runs it in this
process; the operator writes through the same store, as the dashboard in a daemon does. Replay
is checked by counting side effects (STYLE habit 7). After an action the tests wake the
service's loop, as the CLI's nudge wakes a daemon; one test leaves it to the loop's own check
for other writers' commits.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from durablectl import (
    DurableOperator,
    DurableService,
    ExecutionFailed,
    ExecutionNotFound,
    ExecutionStateError,
    PayloadError,
    Signal,
    SqliteStore,
    StepFailed,
    StepIdError,
    workflow,
)
from durablectl.model import (
    ACTIVE_STATUSES,
    OPERATOR_ACCEPTS,
    UNLOADED_REASON,
    AuditEntry,
    Execution,
)
from durablectl.runner import UNLOADED_REASON as RUNNER_UNLOADED_REASON
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay

calls: Counter[str] = Counter()
broken: set[str] = set()  # the names of the side effects that fail ("the bug")
Approval = Signal("approval")
Go = Signal("go")


def effect(name: str, value: Any = None) -> Any:
    """A side effect that counts its runs, and raises while ``name`` is in ``broken``."""
    calls[name] += 1
    if name in broken:
        raise RuntimeError(f"{name} is broken")
    return value if value is not None else f"{name}-{calls[name]}"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    calls.clear()
    broken.clear()


@workflow("op.order", max_attempts=1)
async def order(ctx: Any, data: Any) -> Any:
    reserved = await ctx.step("reserve", lambda: effect("reserve"))
    charged = await ctx.step("charge", lambda: effect("charge"))
    await ctx.step("ship", lambda: effect("ship"))
    return {"reserved": reserved, "charged": charged}


@workflow("op.trip")
async def trip(ctx: Any, data: Any) -> Any:
    await ctx.step("hotel").up(lambda: effect("hotel")).down(
        lambda booking: effect("cancel-hotel"))
    await ctx.step("flight").up(lambda: effect("flight")).down(
        lambda booking: effect("cancel-flight"))
    try:
        await ctx.step("car", lambda: effect("car"))
    except StepFailed:
        await ctx.rollback()
        return "rolled back"
    return "booked"


@workflow("op.parked")
async def parked(ctx: Any, data: Any) -> Any:
    quote = await ctx.step("quote", lambda: effect("quote", 10))
    await ctx.sleep(86400, step_id="cool-off")
    approval = await ctx.wait_for_signal(Approval, step_id="approval")
    await ctx.step("after", lambda: effect("after"))
    return {"quote": quote, "approval": approval}


@workflow("op.three", max_attempts=1)
async def three(ctx: Any, data: Any) -> Any:
    a = await ctx.step("a", lambda: effect("a"))
    b = await ctx.step("b", lambda: effect("b", "new-b" if "new code" in broken_flags else None))
    c = await ctx.step("c", lambda: effect("c"))
    return [a, b, c]


broken_flags: set[str] = set()
release_slow = threading.Event()


@workflow("op.slow")
async def slow(ctx: Any, data: Any) -> Any:
    await ctx.step("slow", lambda: release_slow.wait(10) and effect("slow"))
    return "done"


ALL = [order, trip, parked, three, slow]


def operator_of(store: SqliteStore, clock: FakeClock) -> DurableOperator:
    return DurableOperator(store, clock=clock)


def actions(store: SqliteStore, execution_id: str) -> list[dict[str, Any]]:
    return [a.data for a in store.list_audit_entries(execution_id) if a.kind == "operator_action"]


def transitions(store: SqliteStore, execution_id: str) -> list[tuple[Any, Any]]:
    return [(a.data["from"], a.data["to"]) for a in store.list_audit_entries(execution_id)
            if a.kind == "execution_status_changed"]


def execution(store: SqliteStore, execution_id: str) -> Execution:
    found = store.get_execution(execution_id)
    assert found is not None
    return found


async def settled(store: SqliteStore, execution_id: str, status: str) -> Execution:
    return await until(lambda: (e := store.get_execution(execution_id)) is not None
                       and e.status == status and e)


async def start_and_fail(service: DurableService, wf: Any) -> str:
    """Start ``wf`` (a step the test broke makes it fail) and wait until it has failed."""
    eid = await service.start_execution(wf, None)
    with pytest.raises(ExecutionFailed):
        await service.wait(eid, timeout=5)
    return eid


# -- retry ------------------------------------------------------------------------------------
def test_retry_reruns_a_failed_execution_from_its_last_stored_step(store: SqliteStore,
                                                                   clock: FakeClock) -> None:
    broken.add("charge")

    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await start_and_fail(service, order)
            assert (execution(store, eid).attempt, execution(store, eid).max_attempts) == (1, 1)
            broken.discard("charge")  # the fix is deployed

            assert operator_of(store, clock).retry(eid, reason="card fixed", actor="ann") == eid
            retried = execution(store, eid)
            assert (retried.status, retried.attempt, retried.max_attempts) == ("pending", 2, 2)
            assert retried.error is None and retried.status_reason == "operator retry"
            service.runner.wake()  # what the CLI's nudge does for a daemon
            assert await service.wait(eid, timeout=5) == {"reserved": "reserve-1",
                                                          "charged": "charge-2"}
    run(main())
    # the stored step was replayed, the failed one ran again, the rest ran once
    assert calls == Counter({"reserve": 1, "charge": 2, "ship": 1})


def test_retry_records_who_and_why_with_the_status_change(store: SqliteStore,
                                                          clock: FakeClock) -> None:
    broken.add("reserve")

    async def main() -> str:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await start_and_fail(service, order)
        return eid
    eid = run(main())
    DurableOperator(store).retry(eid)  # actor: the OS user; no reason
    [entry] = [a for a in store.list_audit_entries(eid) if a.kind == "operator_action"]
    assert entry.data == {"action": "retry", "actor": DurableOperator.default_actor(),
                          "reason": None, "step_id": None}
    assert entry.attempt == 2
    assert transitions(store, eid)[-1] == ("failed", "pending")
    last = store.list_audit_entries(eid)[-1]
    assert last.data["reason"] == f"operator retry by {DurableOperator.default_actor()}"
    assert last.seq == entry.seq + 1  # one transaction: consecutive entries


def test_retry_of_a_timed_out_execution_lifts_the_passed_time_out(store: SqliteStore,
                                                                  clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(parked, None, timeout=3600)
            await settled(store, eid, "sleeping")
            clock.advance(7200)
            await settled(store, eid, "failed")
            assert execution(store, eid).status_reason == "timeout"
            operator_of(store, clock).retry(eid, actor="ann")
            assert execution(store, eid).deadline is None
            service.runner.wake()
            await settled(store, eid, "sleeping")  # the sleep starts afresh, no time-out
            clock.advance(86400)
            await settled(store, eid, "waiting")
            await service.signal(eid, Approval, "ok")
            assert (await service.wait(eid, timeout=5))["approval"] == "ok"
    run(main())
    assert calls["quote"] == 1


# -- retry_rollback ---------------------------------------------------------------------------
def test_retry_rollback_resumes_and_completes_the_rollback(store: SqliteStore,
                                                           clock: FakeClock) -> None:
    broken.update({"car", "cancel-hotel"})

    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(trip, None)
            with pytest.raises(ExecutionFailed) as failed:
                await service.wait(eid, timeout=5)
            assert failed.value.status == "compensation_failed"
            assert [(s.step_id, s.error is not None) for s in store.list_step_results(eid)
                    if s.kind == "rollback"] == [("rollback:flight", False),
                                                 ("rollback:hotel", True)]
            broken.discard("cancel-hotel")  # the hotel's API is back

            operator = operator_of(store, clock)
            assert operator.retry_rollback(eid, reason="hotel API back", actor="ann") == eid
            resumed = execution(store, eid)
            assert (resumed.status, resumed.attempt, resumed.error) == ("pending", 1, None)
            assert "rollback:hotel" not in {s.step_id for s in store.list_step_results(eid)}
            # no wake-up from here: the service's own check for other writers' commits
            # (about a second) is enough for the execution to run
            assert await service.wait(eid, timeout=5) == "rolled back"
    run(main())
    # the car's failure was replayed (same attempt), the completed compensation skipped
    assert calls == Counter({"hotel": 1, "flight": 1, "car": 1, "cancel-flight": 1,
                             "cancel-hotel": 2})


def test_retry_rollback_is_audited_with_the_compensation_it_retries(
        store: SqliteStore, clock: FakeClock) -> None:
    broken.update({"car", "cancel-flight"})

    async def main() -> str:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await start_and_fail(service, trip)
            return eid
    eid = run(main())
    DurableOperator(store, clock=clock).retry_rollback(eid, actor="dashboard")
    assert actions(store, eid) == [{"action": "retry-rollback", "actor": "dashboard",
                                    "reason": None, "step_id": "rollback:flight"}]
    assert transitions(store, eid)[-1] == ("compensation_failed", "pending")


# -- skip_step --------------------------------------------------------------------------------
def test_skip_step_of_a_failed_step_makes_replay_return_the_value(store: SqliteStore,
                                                                  clock: FakeClock) -> None:
    broken.add("charge")

    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await start_and_fail(service, order)
            operator = operator_of(store, clock)
            assert operator.skip_step(eid, "charge", {"manual": "ch_1"},
                                      reason="charged by phone", actor="ann") == eid
            skipped = execution(store, eid)
            assert (skipped.status, skipped.attempt) == ("pending", 2)
            service.runner.wake()
            assert await service.wait(eid, timeout=5) == {"reserved": "reserve-1",
                                                          "charged": {"manual": "ch_1"}}
            step = {s.step_id: s for s in store.list_step_results(eid)}["charge"]
            assert (step.result, step.error, step.kind) == ({"manual": "ch_1"}, None, "step")
            assert actions(store, eid) == [{"action": "skip-step", "actor": "ann",
                                            "reason": "charged by phone", "step_id": "charge",
                                            "value": {"manual": "ch_1"}}]
    run(main())
    assert calls == Counter({"reserve": 1, "charge": 1, "ship": 1})  # charge never ran again


def test_skip_step_settles_a_sleep_and_a_signal_wait_at_once(store: SqliteStore,
                                                             clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(parked, None)
            await settled(store, eid, "sleeping")
            operator = operator_of(store, clock)
            operator.skip_step(eid, "cool-off", reason="no need to wait", actor="ann")
            service.runner.wake()
            await settled(store, eid, "waiting")  # the day did not pass: the skip woke it
            operator.skip_step(eid, "approval", {"by": "ops"}, actor="ann")
            service.runner.wake()
            assert await service.wait(eid, timeout=5) == {"quote": 10,
                                                          "approval": {"by": "ops"}}
            # the waits' timers were settled, not left to fire later
            with store.raw_read() as conn:
                pending = conn.execute("SELECT count(*) FROM timers WHERE execution_id = ?"
                                       " AND state = 'pending'", (eid,)).fetchone()[0]
            assert pending == 0
            kinds = {s.step_id: s.kind for s in store.list_step_results(eid)}
            assert (kinds["cool-off"], kinds["approval"]) == ("sleep", "signal")
    run(main())


def test_skip_step_of_a_failed_compensation_resumes_the_rollback(store: SqliteStore,
                                                                 clock: FakeClock) -> None:
    broken.update({"car", "cancel-hotel"})

    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await start_and_fail(service, trip)
            operator_of(store, clock).skip_step(eid, "rollback:hotel", "cancelled by phone",
                                                actor="ann")
            assert execution(store, eid).attempt == 1
            service.runner.wake()
            assert await service.wait(eid, timeout=5) == "rolled back"
    run(main())
    assert calls["cancel-hotel"] == 1  # compensated by hand, not run again


# -- edit_state -------------------------------------------------------------------------------
def test_edit_state_changes_what_replay_returns_even_from_a_cached_history(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        # a cache whatever the cache_mode: the kept run must not resume past the edit either
        async with DurableService(store, ALL, clock=clock, cache_size=1000) as service:
            eid = await service.start_execution(parked, None)
            await settled(store, eid, "sleeping")
            clock.advance(86400)
            await settled(store, eid, "waiting")  # this run cached the history it loaded
            operator = operator_of(store, clock)
            assert operator.edit_state(eid, "quote", 21, reason="price fixed", actor="ann") == eid
            assert execution(store, eid).status == "waiting"  # nothing else changes
            histories = service.runner.env.histories
            assert histories is not None and eid in histories._entries
            hits = histories.hits
            await service.signal(eid, Approval, "yes")
            assert await service.wait(eid, timeout=5) == {"quote": 21, "approval": "yes"}
            # the run used the cached history, which loaded the edited row (a newer seq)
            assert histories.hits == hits + 1
            [entry] = actions(store, eid)
            assert entry == {"action": "edit-state", "actor": "ann", "reason": "price fixed",
                             "step_id": "quote", "value": 21, "previous": 10}
    run(main())
    assert calls["quote"] == 1


def test_edit_state_keeps_the_order_of_the_run_for_a_later_fork(store: SqliteStore,
                                                                 clock: FakeClock) -> None:
    broken.add("c")

    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await start_and_fail(service, three)
            operator = operator_of(store, clock)
            operator.edit_state(eid, "a", "edited-a", actor="ann")
            steps = store.list_step_results(eid)
            assert [s.step_id for s in steps] == ["a", "b", "c"]  # seq order is run order
            fork = operator.fork(eid, "b", actor="ann")
            assert [(s.step_id, s.result) for s in store.list_step_results(fork)] == [
                ("a", "edited-a")]
    run(main())


# -- fork -------------------------------------------------------------------------------------
def test_fork_copies_the_history_before_the_step_and_runs_from_there(store: SqliteStore,
                                                                      clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(three, {"n": 1})
            assert await service.wait(eid, timeout=5) == ["a-1", "b-1", "c-1"]
            before = (execution(store, eid), store.list_step_results(eid))
            broken_flags.add("new code")  # "fix the code, re-run from step b"
            try:
                fork = operator_of(store, clock).fork(eid, "b", reason="re-run b",
                                                      actor="ann")
                assert fork != eid
                forked = execution(store, fork)
                assert (forked.status, forked.workflow_id, forked.input, forked.attempt) == (
                    "pending", "op.three", {"n": 1}, 1)
                assert forked.forked_from == {"execution_id": eid, "step_id": "b"}
                assert [(s.step_id, s.result, s.attempt) for s in
                        store.list_step_results(fork)] == [("a", "a-1", 1)]
                service.runner.wake()
                assert await service.wait(fork, timeout=5) == ["a-1", "new-b", "c-2"]
            finally:
                broken_flags.clear()
            # the original is untouched but for the audit entry saying it was forked
            assert (execution(store, eid), store.list_step_results(eid)) == before
            assert actions(store, eid) == [{"action": "fork", "actor": "ann",
                                            "reason": "re-run b", "step_id": "b",
                                            "fork": fork}]
            assert actions(store, fork) == [{"action": "fork", "actor": "ann",
                                             "reason": "re-run b", "step_id": "b",
                                             "forked_from": eid, "copied": 1}]
            copied = [a.data for a in store.list_audit_entries(fork)
                      if a.kind == "step_completed" and "copied_from" in a.data]
            assert [c["step_id"] for c in copied] == ["a"]
    run(main())
    assert calls == Counter({"a": 1, "b": 2, "c": 2})


def test_fork_keeps_the_time_out_and_copies_up_to_a_pending_wait(store: SqliteStore,
                                                                 clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(parked, None, timeout=3 * 86400)
            await settled(store, eid, "sleeping")
            clock.advance(86400)
            await settled(store, eid, "waiting")
            fork = operator_of(store, clock).fork(eid, "approval", actor="ann")
            forked = execution(store, fork)
            assert forked.deadline is not None and \
                (forked.deadline - forked.created_at).total_seconds() == 3 * 86400
            assert [s.step_id for s in store.list_step_results(fork)] == ["quote", "cool-off"]
            service.runner.wake()
            await settled(store, fork, "waiting")  # its sleep was copied: straight to the wait
            await service.signal(fork, Approval, "fork")
            assert (await service.wait(fork, timeout=5))["approval"] == "fork"
            assert execution(store, eid).status == "waiting"
    run(main())
    assert calls["quote"] == 1


# -- force_fail -------------------------------------------------------------------------------
def test_force_fail_ends_a_parked_execution_with_the_reason(store: SqliteStore,
                                                            clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(parked, None)
            await settled(store, eid, "sleeping")
            operator_of(store, clock).force_fail(eid, "customer left", actor="ann")
            with pytest.raises(ExecutionFailed) as failed:
                await service.wait(eid, timeout=5)
            assert failed.value.error is not None
            assert (failed.value.error.type, failed.value.error.message) == (
                "ForceFailed", "customer left")
            clock.advance(2 * 86400)  # its timers are gone: nothing wakes it
            service.runner.wake()
            await service.runner.tick()
            found = execution(store, eid)
            assert (found.status, found.status_reason) == ("failed", "force-failed: customer left")
            assert actions(store, eid) == [{"action": "force-fail", "actor": "ann",
                                            "reason": "customer left", "step_id": None}]
            assert transitions(store, eid)[-1] == ("sleeping", "failed")
    run(main())
    assert "after" not in calls


def test_force_fail_of_a_running_execution_stops_it_at_its_next_write(
        store: SqliteStore, clock: FakeClock) -> None:
    release_slow.clear()

    async def main() -> None:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(slow, None)
            await settled(store, eid, "running")
            await until(lambda: eid in service.runner.contexts)
            DurableOperator(store, clock=clock).force_fail(eid)  # no reason: a default message
            release_slow.set()
            await until(lambda: not service.runner.running)
            found = execution(store, eid)
            assert found.status == "failed" and found.lease_owner is None
            assert found.error is not None and found.error.message.startswith(
                "failed by the operator")
            assert store.list_step_results(eid) == []  # the step's result was not recorded
    run(main())


# -- the stuck list ---------------------------------------------------------------------------
def test_stuck_lists_failed_compensation_failed_and_unloaded_workflows(
        store: SqliteStore, clock: FakeClock) -> None:
    assert RUNNER_UNLOADED_REASON == UNLOADED_REASON
    broken.update({"charge", "car", "cancel-hotel"})
    ghost, _ = store.create_execution(execution_id="ghost-1", workflow_id="op.ghost.v1",
                                      input_json=None, max_attempts=3, retry_backoff=2.0,
                                      now=clock.timestamp())

    async def main() -> tuple[str, str, str]:
        async with DurableService(store, ALL, clock=clock) as service:
            failed = await service.start_execution(order, None)
            compensation = await service.start_execution(trip, None)
            done = await service.start_execution(three, None)
            for eid in (failed, compensation):
                with pytest.raises(ExecutionFailed):
                    await service.wait(eid, timeout=5)
            await service.wait(done, timeout=5)
            return failed, compensation, done
    failed, compensation, _done = run(main())
    operator = DurableOperator(store)
    stuck = {e.execution_id: e for e in operator.list_stuck_executions()}
    assert set(stuck) == {failed, compensation, ghost}
    assert stuck[ghost].status == "pending"
    assert stuck[ghost].status_reason == UNLOADED_REASON + "op.ghost.v1"
    assert len(operator.list_stuck_executions(limit=2)) == 2
    listed = operator.list_stuck_executions()
    assert [e.updated_at for e in listed] == sorted((e.updated_at for e in listed),
                                                    reverse=True)
    operator.force_fail(ghost, "workflow removed")  # an operator's way out for it
    assert {e.execution_id for e in operator.list_stuck_executions()} == {
        failed, compensation, ghost}
    assert execution(store, ghost).status == "failed"


# -- refusals ---------------------------------------------------------------------------------
def _states(store: SqliteStore, clock: FakeClock) -> dict[str, str]:
    """An execution in each of several statuses, moved along through the store as a worker
    would: pending, running, completed, failed, cancelled."""
    now = clock.timestamp()
    ids: dict[str, str] = {}
    for status in ("pending", "running", "completed", "failed", "cancelled"):
        eid, _ = store.create_execution(execution_id=f"ex-{status}", workflow_id="op.order",
                                        input_json=None, max_attempts=1, retry_backoff=2.0,
                                        now=now)
        ids[status] = eid
        if status == "pending":
            continue
        if status == "cancelled":
            store.cancel_execution(eid, reason=None, now=now)
            continue
        assert store.claim_execution(eid, worker_id="w", workflow_ids=["op.order"], now=now,
                                     real_now=now, lease_until=now + 3600) is not None
        store.record_step(execution_id=eid, worker_id="w", step_id="reserve", kind="step",
                          result_json='"r"', error=None, attempt=1, started_at=now,
                          completed_at=now, now=now)
        if status != "running":
            store.finish(execution_id=eid, worker_id="w", status=status, result_json=None,
                         error=None, reason=None, now=now)
    return ids


def _act(operator: DurableOperator, action: str, eid: str, step: str = "reserve") -> str:
    if action == "retry":
        return operator.retry(eid)
    if action == "retry-rollback":
        return operator.retry_rollback(eid)
    if action == "skip-step":
        return operator.skip_step(eid, step, 1)
    if action == "edit-state":
        return operator.edit_state(eid, step, 1)
    if action == "force-fail":
        return operator.force_fail(eid, "why")
    return operator.fork(eid, step)


@pytest.mark.parametrize("action", sorted(OPERATOR_ACCEPTS))
def test_each_action_refuses_the_statuses_it_does_not_accept(
        store: SqliteStore, clock: FakeClock, action: str) -> None:
    ids = _states(store, clock)
    operator = operator_of(store, clock)
    accepted = OPERATOR_ACCEPTS[action]
    for status, eid in ids.items():
        before = len(store.list_audit_entries(eid))
        if status in accepted:
            continue
        with pytest.raises(ExecutionStateError) as refused:
            _act(operator, action, eid)
        assert (refused.value.action, refused.value.status, refused.value.accepted) == (
            action, status, accepted)
        assert refused.value.exit_code == 2
        assert str(refused.value) == (f"cannot {action} execution {eid}: it is {status} "
                                      f"(accepted: {', '.join(accepted)})")
        assert len(store.list_audit_entries(eid)) == before  # nothing written
        assert execution(store, eid).status == status
    with pytest.raises(ExecutionNotFound):
        _act(operator, action, "no-such-execution")


def test_the_accepted_statuses_are_as_documented() -> None:
    assert OPERATOR_ACCEPTS["retry"] == ("failed",)
    assert OPERATOR_ACCEPTS["retry-rollback"] == ("compensation_failed",)
    assert "running" not in OPERATOR_ACCEPTS["skip-step"] + OPERATOR_ACCEPTS["edit-state"]
    assert OPERATOR_ACCEPTS["force-fail"] == ACTIVE_STATUSES
    assert len(OPERATOR_ACCEPTS["fork"]) == 9


@pytest.mark.parametrize("action", ["skip-step", "edit-state", "fork"])
def test_an_unknown_step_is_a_step_id_error_naming_the_stored_steps(
        store: SqliteStore, clock: FakeClock, action: str) -> None:
    ids = _states(store, clock)
    with pytest.raises(StepIdError, match=r"has no (stored )?step 'nope' \(its steps: reserve\)"):
        _act(operator_of(store, clock), action, ids["failed"], "nope")
    assert actions(store, ids["failed"]) == []


def test_edit_state_needs_a_stored_result_but_skip_step_settles_a_wait(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> str:
        async with DurableService(store, ALL, clock=clock) as service:
            eid = await service.start_execution(parked, None)
            await settled(store, eid, "sleeping")
            return eid
    eid = run(main())
    operator = operator_of(store, clock)
    with pytest.raises(StepIdError, match="no stored step 'cool-off'"):
        operator.edit_state(eid, "cool-off", None)
    operator.skip_step(eid, "cool-off")
    assert execution(store, eid).status == "pending"


def test_a_value_that_is_not_json_is_refused_and_nothing_changes(store: SqliteStore,
                                                                 clock: FakeClock) -> None:
    ids = _states(store, clock)
    operator = operator_of(store, clock)
    with pytest.raises(PayloadError, match="value for step 'reserve'"):
        operator.edit_state(ids["failed"], "reserve", {"when": object()})
    assert store.list_step_results(ids["failed"])[0].result == "r"
    assert actions(store, ids["failed"]) == []


def test_every_action_is_one_audited_transaction(store: SqliteStore, clock: FakeClock) -> None:
    ids = _states(store, clock)
    operator = operator_of(store, clock)
    fork = operator.fork(ids["completed"], "reserve", reason="r1", actor="ann")
    operator.edit_state(ids["failed"], "reserve", "edited", reason="r2", actor="ann")
    operator.skip_step(ids["failed"], "reserve", "skipped", reason="r3", actor="ann")
    operator.force_fail(ids["pending"], "r4", actor="ann")
    operator.retry(ids["pending"], reason="r5", actor="ann")
    entries: list[AuditEntry] = []
    for eid in [*ids.values(), fork]:
        entries.extend(a for a in store.list_audit_entries(eid) if a.kind == "operator_action")
    assert sorted((a.data["action"], a.data["reason"]) for a in entries) == [
        ("edit-state", "r2"), ("force-fail", "r4"), ("fork", "r1"), ("fork", "r1"),
        ("retry", "r5"), ("skip-step", "r3")]
    assert all(a.data["actor"] == "ann" for a in entries)
    assert execution(store, ids["pending"]).attempt == 2
