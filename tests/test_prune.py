"""Retention: `durablectl prune` removes old finished executions with all their history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durablectl import DurableService, Signal, SqliteStore, workflow
from durablectl.cli.app import app
from durablectl.testing import FakeClock

from .conftest import isolate_user_dirs, run, until

Go = Signal("go")


@workflow("prune.done")
async def done(ctx, n):
    await ctx.note("working", {"n": n})
    return await ctx.step("one", lambda: n)


@workflow("prune.waits")
async def waits(ctx, _):
    return await ctx.wait_for_signal(Go, step_id="go")


def seed(store: SqliteStore, clock: FakeClock) -> tuple[list[str], str, str]:
    async def main() -> tuple[list[str], str, str]:
        async with DurableService(store, [done, waits], clock=clock) as service:
            old = [await service.start_execution(done, i) for i in range(3)]
            for eid in old:
                await service.wait(eid, timeout=5)
            waiting = await service.start_execution(waits)
            await until(lambda: store.get_execution(waiting).status == "waiting")
            await service.signal(waiting, Go, "buffered?")  # consumed at once
            await service.wait(waiting, timeout=5)
            still = await service.start_execution(waits)
            await until(lambda: store.get_execution(still).status == "waiting")
            clock.advance(40 * 86400)
            recent = await service.start_execution(done, 9)
            await service.wait(recent, timeout=5)
            return [*old, waiting], still, recent
    return run(main())  # type: ignore[no-any-return]


def test_prune_removes_old_finished_executions_and_their_history(store: SqliteStore,
                                                                  clock: FakeClock) -> None:
    old, active, recent = seed(store, clock)
    deleted = store.prune_executions(older_than=clock.timestamp() - 30 * 86400,
                                     statuses=["completed"], batch=2)
    assert deleted == len(old)
    assert {e.execution_id for e in store.list_executions()} == {active, recent}
    with store.raw_read() as conn:
        for table in ("steps", "audit", "signals", "timers"):
            left = {row[0] for row in conn.execute(f"SELECT execution_id FROM {table}")}
            assert not left & set(old), table
    assert store.list_step_results(recent) and store.list_audit_entries(active)
    with pytest.raises(ValueError, match="finished statuses only"):
        store.prune_executions(older_than=clock.timestamp(), statuses=["waiting"])


def test_the_prune_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = isolate_user_dirs(tmp_path, monkeypatch, "prune.db")
    # the CLI measures age on the wall clock: make the history years old
    clock = FakeClock(datetime(2020, 1, 1, tzinfo=UTC))
    store = SqliteStore(db)
    old, active, _recent = seed(store, clock)
    store.close()
    runner = CliRunner()
    bad = runner.invoke(app, ["prune", "--older-than", "30d", "--status", "waiting",
                              "--db", str(db)])
    assert bad.exit_code == 2 and "finished statuses only" in bad.output
    bad = runner.invoke(app, ["prune", "--older-than", "soon", "--db", str(db)])
    assert bad.exit_code == 2
    result = runner.invoke(app, ["prune", "--older-than", "5000d", "--json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deleted"] == 0  # nothing is that old
    result = runner.invoke(app, ["prune", "--older-than", "30d", "--status", "completed",
                                 "--vacuum", "--json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["deleted"] == len(old) + 1 and answer["vacuumed"] is True
    with SqliteStore(db) as after:
        assert [e.execution_id for e in after.list_executions()] == [active]
