"""Retention: `durablectl prune` removes old finished executions with all their history."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durablectl import DurableService, Signal, SqliteStore, workflow
from durablectl.cli.app import app
from durablectl.store import retention
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


def _finished_rows(store: SqliteStore, n: int, *, created: float, updated: float,
                   prefix: str = "old") -> list[str]:
    """``n`` finished executions with three steps and audit each, written as the engine would
    leave them (the pacing tests need many; running them all would only be slower)."""
    ids = [f"{prefix}-{i}" for i in range(1, n + 1)]
    for eid in ids:
        store.create_execution(execution_id=eid, workflow_id="prune.done", input_json="1",
                               max_attempts=1, retry_backoff=2.0, now=created)
    with sqlite3.connect(store.path) as conn:
        conn.executemany("UPDATE executions SET status = 'completed', updated_at = ?"
                         " WHERE execution_id = ?", [(updated, eid) for eid in ids])
        conn.executemany(
            "INSERT INTO steps (execution_id, step_id, kind, seq, result, attempt,"
            " started_at, completed_at) VALUES (?, ?, 'step', ?, '1', 1, ?, ?)",
            [(eid, f"s{k}", k, created, created) for eid in ids for k in range(3)])
    return ids


def test_prune_paces_its_batches_and_leaves_the_lock_free_between_them(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_800_000_000.0
    old = _finished_rows(store, 300, created=now - 40 * 86400, updated=now - 40 * 86400)
    # finished recently although started long ago: not "older than" the cut-off
    [kept] = _finished_rows(store, 1, created=now - 40 * 86400, updated=now, prefix="kept")
    sizes: list[int] = []
    original = retention.next_batch

    def spy(size: int, held_s: float, budget_s: float = retention.BUDGET_S) -> int:
        sizes.append(size)
        return original(size, held_s, budget_s)

    pauses: list[float] = []

    def pause(seconds: float) -> None:
        # between two batches another process can take the write lock at once
        other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        pauses.append(seconds)

    monkeypatch.setattr(retention, "next_batch", spy)
    monkeypatch.setattr("durablectl.store.sqlite.time.sleep", pause)
    before = store.pragma("wal_autocheckpoint")
    deleted = store.prune_executions(older_than=now - 30 * 86400, statuses=["completed"],
                                     batch=100, budget_s=1e-9)
    assert deleted == len(old)
    # a tiny budget shrinks the batches to the floor; each batch is followed by a pause
    assert sizes[0] == 100 and retention.MIN_BATCH in sizes
    assert len(pauses) == len(sizes) and all(p >= retention.MIN_PAUSE_S for p in pauses)
    assert store.pragma("wal_autocheckpoint") == before
    assert [e.execution_id for e in store.list_executions()] == [kept]
    with store.raw_read() as conn:
        assert conn.execute("SELECT count(*) FROM steps WHERE execution_id != ?",
                            (kept,)).fetchone()[0] == 0


def test_batch_sizes_follow_the_time_budget() -> None:
    budget = retention.BUDGET_S
    assert retention.next_batch(200, budget / 4) == 300  # quick: grow by at most half
    assert retention.next_batch(200, budget * 4) == 50  # slow: shrink at once
    assert retention.next_batch(200, 0.0) == 300
    assert retention.next_batch(20, 10.0) == retention.MIN_BATCH
    assert retention.next_batch(retention.MAX_BATCH, 1e-6) == retention.MAX_BATCH
    assert retention.pause_after(0.010, 0.004) == pytest.approx(0.006)
    assert retention.pause_after(0.010, 0.050) == retention.MIN_PAUSE_S
