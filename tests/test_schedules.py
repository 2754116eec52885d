"""Schedules through the service API: idempotent ensure, firing, catch-up, overlap, pause,
remove, one-time schedules, declared schedules and races between workers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from durablectl import (
    DurableClient,
    DurableService,
    InvalidSchedule,
    ScheduleNotFound,
    Signal,
    SqliteStore,
    every,
    workflow,
)
from durablectl.testing import FakeClock

from .conftest import run, until

Go = Signal("go")


@workflow("sched.tick")
async def tick(ctx, data):
    return await ctx.step("echo", lambda: data)


@workflow("sched.slow")
async def slow(ctx, data):
    await ctx.wait_for_signal(Go, step_id="go")
    return data


@workflow("sched.declared", schedule=every(60))
async def declared(ctx, data):
    return "declared"


def executions_of(store: SqliteStore, workflow_id: str) -> list[str]:
    return [e.execution_id for e in store.list_executions(workflow=workflow_id, limit=1000)]


def test_ensure_is_idempotent_and_updates_re_arm(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [tick], clock=clock) as service:
            first = await service.ensure_schedule(tick, {"n": 1}, id="every-minute", interval=60)
            assert first.next_run == clock.now() + timedelta(seconds=60)
            clock.advance(10)
            again = await service.ensure_schedule(tick, {"n": 1}, id="every-minute", interval=60)
            assert again.next_run == first.next_run  # not even the next run moves
            changed = await service.ensure_schedule(tick, {"n": 1}, id="every-minute",
                                                    interval=120)
            assert changed.next_run == clock.now() + timedelta(seconds=120)
            updated = await service.update_schedule("every-minute", input={"n": 2})
            assert updated.input == {"n": 2} and updated.interval_seconds == 120
            with pytest.raises(InvalidSchedule, match="belongs to workflow"):
                await service.ensure_schedule(slow, None, id="every-minute", interval=60)
            with pytest.raises(InvalidSchedule):
                await service.ensure_schedule(tick, None, id="bad", cron="61 * * * *")
            with pytest.raises(InvalidSchedule):
                await service.ensure_schedule(tick, None, id="bad", cron="0 3 * * *",
                                              timezone="Mars/Olympus")
            assert await service.get_schedule("bad") is None
    run(main())


def test_a_due_tick_starts_one_execution_and_arms_the_next(store: SqliteStore,
                                                           clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [tick], clock=clock) as service:
            await service.ensure_schedule(tick, {"n": 1}, id="minutely", interval=60)
            clock.advance(60)
            await until(lambda: len(executions_of(store, "sched.tick")) == 1)
            [eid] = executions_of(store, "sched.tick")
            assert await service.wait(eid, timeout=5) == {"n": 1}
            schedule = await service.get_schedule("minutely")
            assert schedule.last_execution_id == eid
            assert schedule.last_execution_status == "completed"
            assert schedule.next_run == clock.now() + timedelta(seconds=60)
            runs = store.list_schedule_runs("minutely")
            assert [(r.outcome, r.execution_id) for r in runs] == [("started", eid)]
    run(main())


def test_a_schedule_keeps_one_timer_row_however_often_it_ticks(store: SqliteStore,
                                                               clock: FakeClock) -> None:
    """Each tick re-arms the schedule's timer; the fired one does not stay behind (a minute's
    schedule would leave half a million rows a year for every re-arm to step over)."""
    def timer_rows() -> list[tuple[str, float]]:
        with store.raw_read() as conn:
            return conn.execute("SELECT state, due_at FROM timers WHERE schedule_id = ?",
                                ("minutely",)).fetchall()

    async def main() -> None:
        async with DurableService(store, [tick], clock=clock) as service:
            await service.ensure_schedule(tick, {"n": 1}, id="minutely", interval=60)
            for n in range(1, 6):
                clock.advance(60)
                await until(lambda n=n: len(executions_of(store, "sched.tick")) == n)
            await until(lambda: timer_rows() == [
                ("pending", (clock.now() + timedelta(seconds=60)).timestamp())])
            await service.pause_schedule("minutely")
            assert timer_rows() == []
            await service.resume_schedule("minutely")
            assert [state for state, _due in timer_rows()] == ["pending"]
    run(main())


@pytest.mark.parametrize("policy,expected", [("one", 1), ("all", 10), ("none", 0)])
def test_catch_up_policies_after_downtime(store: SqliteStore, clock: FakeClock, policy: str,
                                          expected: int) -> None:
    client = DurableClient(store, clock=clock)

    async def main() -> None:
        async with DurableService(store, [tick], clock=clock):
            pass  # records the workflow
        client.ensure_schedule("sched.tick", None, id="c", interval=120, catch_up=policy)
        # ten ticks pass while no worker runs; the newest is past the 60 s misfire grace too
        clock.advance(1200 + 61)
        async with DurableService(store, [tick], clock=clock) as service:
            await until(lambda: (service.runner.ticks > 3 and
                                 store.get_schedule("c").next_run > clock.now()))
            await asyncio.sleep(0.05)
            assert len(executions_of(store, "sched.tick")) == expected
            runs = store.list_schedule_runs("c")
            if policy != "all":
                missed = [r for r in runs if r.outcome == "missed"]
                assert missed and missed[0].missed_count >= 9
    run(main())


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
def test_overlap_policies_when_the_last_run_is_still_going(store: SqliteStore,
                                                           clock: FakeClock,
                                                           overlap: str) -> None:
    async def main() -> None:
        async with DurableService(store, [slow], clock=clock) as service:
            await service.ensure_schedule(slow, 1, id="o", interval=60, overlap=overlap)
            clock.advance(60)
            await until(lambda: len(executions_of(store, "sched.slow")) == 1)
            first = executions_of(store, "sched.slow")[0]
            await until(lambda: store.get_execution(first).status == "waiting")
            clock.advance(60)
            await until(lambda: len(store.list_schedule_runs("o")) == 2)
            outcomes = sorted(r.outcome for r in store.list_schedule_runs("o"))
            if overlap == "allow":
                assert outcomes == ["started", "started"]
                return
            assert outcomes == sorted(["started", "skipped" if overlap == "skip" else "queued"])
            await service.signal(first, Go)
            await service.wait(first, timeout=5)
            if overlap == "queue":
                await until(lambda: len(executions_of(store, "sched.slow")) == 2)
            else:
                await asyncio.sleep(0.05)
                assert len(executions_of(store, "sched.slow")) == 1
    run(main())


def test_pause_resume_remove_and_one_time_schedules(store: SqliteStore,
                                                    clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [tick], clock=clock) as service:
            await service.ensure_schedule(tick, None, id="p", interval=60)
            paused = await service.pause_schedule("p")
            assert paused.status == "paused" and paused.paused_reason == "operator"
            clock.advance(120)
            await asyncio.sleep(0.05)
            assert executions_of(store, "sched.tick") == []
            resumed = await service.resume_schedule("p")
            assert resumed.status == "active" and resumed.next_run > clock.now()
            await service.remove_schedule("p")
            assert await service.get_schedule("p") is None
            assert store.next_due_at() is None  # its timer went with it
            with pytest.raises(ScheduleNotFound):
                await service.remove_schedule("p")
            once = await service.schedule(tick, {"once": True}, delay=30)
            clock.advance(3600)  # however late, it runs once
            await until(lambda: len(executions_of(store, "sched.tick")) == 1)
            await until(lambda: store.get_schedule(once).status == "done")
            clock.advance(3600)
            await asyncio.sleep(0.05)
            assert len(executions_of(store, "sched.tick")) == 1
    run(main())


def test_declared_schedules_are_ensured_and_paused_when_undeclared(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [declared], clock=clock):
            schedule = store.get_schedule("sched.declared")
            assert schedule is not None and schedule.declared
            assert schedule.interval_seconds == 60 and schedule.status == "active"
        async with DurableService(store, [tick], clock=clock) as service:
            service.sync_declared_schedules(pause_undeclared=True)
            schedule = store.get_schedule("sched.declared")
            assert (schedule.status, schedule.paused_reason) == ("paused", "undeclared")
        async with DurableService(store, [declared], clock=clock):
            assert store.get_schedule("sched.declared").status == "active"
    run(main())


def test_a_failed_firing_leaves_the_tick_for_a_later_one(store: SqliteStore,
                                                         clock: FakeClock) -> None:
    """Firing, starting the execution and arming the next tick are one transaction: a crash
    in between leaves the tick pending, and it then runs exactly once."""
    client = DurableClient(store, clock=clock)
    client.ensure_schedule("sched.tick", None, id="atomic", interval=60)
    clock.advance(61)
    from durablectl.schedules import SchedulePlanner

    def boom(schedule: object, tick: float) -> dict[str, object]:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        store.fire_schedules(now=clock.timestamp(), limit=10,
                             plan=SchedulePlanner(now=clock.timestamp(),
                                                  misfire_grace_seconds=60, max_catch_up=100),
                             new_execution=boom)
    assert store.list_schedule_runs("atomic") == []
    assert store.next_due_at() is not None

    async def main() -> None:
        async with DurableService(store, [tick], clock=clock):
            await until(lambda: len(executions_of(store, "sched.tick")) == 1)
    run(main())


def test_two_workers_racing_on_one_tick_start_one_execution(store: SqliteStore, db_path,
                                                            clock: FakeClock) -> None:
    other = SqliteStore(db_path)

    async def main() -> None:
        async with DurableService(store, [tick], clock=clock) as one, \
                DurableService(other, [tick], clock=clock) as two:
            await one.ensure_schedule(tick, None, id="race", interval=60)
            for started in range(1, 6):
                clock.advance(60)
                # both workers see the tick due; wait for it before the next one (on a loaded
                # machine a fixed pause let catch_up="one" fold two ticks into one)
                await until(lambda n=started: len(executions_of(store, "sched.tick")) >= n)
            assert two.runner.ticks > 0
            await asyncio.sleep(0.1)
            assert len(executions_of(store, "sched.tick")) == 5
            due = [r.due_at for r in store.list_schedule_runs("race")]
            assert len(due) == len(set(due)) == 5
    run(main())
    other.close()
