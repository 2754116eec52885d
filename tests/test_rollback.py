"""Compensations: step(id).up().down(), rollback in reverse order, compensation_failed."""

from __future__ import annotations

import pytest

from durablectl import DurableService, ExecutionFailed, Signal, SqliteStore, workflow
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay

log: list[str] = []
Decision = Signal("decision")


@workflow("rollback.order")
async def order(ctx, fail_release):
    a = await ctx.step("reserve").up(lambda: log.append("reserve") or {"r": 1}).down(
        lambda r: log.append(f"release {r['r']}"))
    await ctx.step("charge").up(lambda: log.append("charge") or 42).down(
        lambda c: log.append(f"refund {c}"))
    await ctx.step("plain", lambda: log.append("plain") or 0)
    # parks here: the compensations must be registered again from stored results on replay
    decision = await ctx.wait_for_signal(Decision, step_id="decision")
    if decision == "cancel":
        if fail_release:
            def refuse(_r):
                raise RuntimeError("warehouse offline")
            await ctx.step("late").up(lambda: 1).down(refuse)
        await ctx.rollback()
        await ctx.rollback()  # a second call does nothing more
        return {"status": "rolled back", "a": a}
    return {"status": "kept"}


def test_rollback_runs_compensations_in_reverse_order_once(store: SqliteStore,
                                                           clock: FakeClock) -> None:
    log.clear()

    async def main() -> None:
        async with DurableService(store, [order], clock=clock) as service:
            eid = await service.start_execution(order, False)
            await until(lambda: store.get_execution(eid).status == "waiting")
            await service.signal(eid, Decision, "cancel")
            assert await service.wait(eid, timeout=5) == {"status": "rolled back",
                                                          "a": {"r": 1}}
            steps = [(s.step_id, s.kind) for s in store.list_step_results(eid)]
            assert steps[-2:] == [("rollback:charge", "rollback"),
                                  ("rollback:reserve", "rollback")]
    run(main())
    assert log == ["reserve", "charge", "plain", "refund 42", "release 1"]


def test_failing_compensation_ends_the_run_as_compensation_failed(store: SqliteStore) -> None:
    log.clear()

    async def main() -> None:
        async with DurableService(store, [order]) as service:
            eid = await service.start_execution(order, True)
            await service.signal(eid, Decision, "cancel")
            with pytest.raises(ExecutionFailed) as info:
                await service.wait(eid, timeout=5)
            assert info.value.status == "compensation_failed"
            assert "warehouse offline" in info.value.error.message
            execution = store.get_execution(eid)
            assert execution.status == "compensation_failed"
            assert execution.attempt == 1  # terminal: no further attempts
            failed = [s for s in store.list_step_results(eid) if s.error is not None]
            assert [s.step_id for s in failed] == ["rollback:late"]
    run(main())
    # the failing compensation was the first in reverse order: nothing else was compensated
    assert "refund 42" not in log
