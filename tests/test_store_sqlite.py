"""What only the SQLite store promises: the file, its pragmas, refusing files that are not ours,
migrations, and the grouped writer's batches (the shared contract is test_store_contract.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from durablectl.bridge import FutureBridge
from durablectl.errors import IncompatibleDatabase, LeaseLost, StorageError
from durablectl.model import AuditEntry
from durablectl.store.migrations import APPLICATION_ID, LATEST_VERSION
from durablectl.store.sqlite import SqliteStore
from durablectl.store.sqlite_loop import CHECKPOINT_EVERY_COMMITS

T0 = 1_900_000_000.0
R0 = 1_800_000_000.0
WF = "orders.v1"


def create(store: SqliteStore, execution_id: str, input_json: str | None = None) -> None:
    store.create_execution(execution_id=execution_id, workflow_id=WF, input_json=input_json,
                           max_attempts=3, retry_backoff=2.0, now=T0)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in the folder with the hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def add_schedule(conn: sqlite3.Connection, overlap: str = "allow") -> None:
    """Schedule ``s``, every minute, written as a row (for tests that write its ticks raw)."""
    conn.execute(
        "INSERT INTO schedules (id, workflow_id, kind, interval_seconds, timezone, input,"
        " status, catch_up, overlap, created_at, updated_at)"
        " VALUES ('s', ?, 'interval', 60, 'UTC', 'null', 'active', 'skip', ?, ?, ?)",
        (WF, overlap, T0, T0))


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A usual umask, so that a file created without an explicit mode would be 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# a fresh file ----------------------------------------------------------------------------------
@pytest.mark.full_level
def test_a_fresh_file_is_marked_and_configured(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        assert store.pragma("application_id") == APPLICATION_ID
        assert store.pragma("user_version") == LATEST_VERSION
        assert store.pragma("journal_mode") == "wal"
        assert store.pragma("synchronous") == 2  # FULL
        assert store.pragma("busy_timeout") == 5000
        assert store.pragma("foreign_keys") == 1
        with store.raw_read() as reader:  # every connection, readers too
            assert reader.execute("PRAGMA synchronous").fetchone()[0] == 2
            assert reader.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
            assert reader.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    plain = sqlite3.connect(db_path)
    try:  # the marks are in the file, not only in the connection
        assert plain.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert plain.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_synchronous_and_busy_timeout_follow_the_configuration(db_path: Path) -> None:
    with SqliteStore(db_path, synchronous="normal", busy_timeout_ms=1234) as store:
        assert store.synchronous == "NORMAL"
        assert store.pragma("synchronous") == 1
        assert store.pragma("busy_timeout") == 1234
        with store.raw_read() as reader:
            assert reader.execute("PRAGMA synchronous").fetchone()[0] == 1
            assert reader.execute("PRAGMA busy_timeout").fetchone()[0] == 1234


def test_an_unknown_synchronous_setting_is_refused(db_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(db_path, synchronous="SOMETIMES")
    assert not db_path.exists()


def test_the_database_and_its_companions_are_private(db_path: Path, umask_022: None) -> None:
    with SqliteStore(db_path) as store:
        create(store, "ex-1")
        store.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
        assert mode(db_path) == 0o600
        for suffix in ("-wal", "-shm"):
            companion = db_path.with_name(db_path.name + suffix)
            assert companion.exists() and mode(companion) == 0o600
        workers = db_path.with_name(db_path.name + ".workers")
        assert mode(workers) == 0o700
        [lock] = list(workers.iterdir())
        assert lock.name == "w1.lock" and mode(lock) == 0o600
        store.unregister_worker("w1")
        assert list(workers.iterdir()) == []


def test_input_is_stored_as_json_text(store: SqliteStore) -> None:
    create(store, "ex-1", '{"id": 7}')
    with store.raw_read() as reader:
        kind, text = reader.execute(
            "SELECT typeof(input), input FROM executions WHERE execution_id = 'ex-1'"
        ).fetchone()
    assert (kind, text) == ("text", '{"id": 7}')


def test_an_empty_file_is_initialised(db_path: Path) -> None:
    db_path.write_bytes(b"")
    with SqliteStore(db_path) as store:
        assert store.pragma("user_version") == LATEST_VERSION
        create(store, "ex-1")


# files that are not ours -----------------------------------------------------------------------
def refused(path: Path, *phrases: str) -> None:
    """Opening ``path`` raises IncompatibleDatabase naming the file and leaves the folder as
    it was, byte for byte."""
    before = snapshot(path.parent)
    with pytest.raises(IncompatibleDatabase) as error:
        SqliteStore(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    for phrase in phrases:
        assert phrase in message
    assert error.value.exit_code == 6
    assert snapshot(path.parent) == before


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("shopping list: eggs, milk\n" * 200)
    refused(path, "not a durablectl database")


def test_a_sqlite_file_of_another_application_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('ada')")
    conn.commit()
    conn.close()
    refused(path, "another application", "no durablectl marker")
    conn = sqlite3.connect(path)
    try:  # still a rollback-journal file with its data
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT name FROM contacts").fetchall() == [("ada",)]
    finally:
        conn.close()


def test_a_sqlite_file_with_another_application_id_is_refused_untouched(
        tmp_path: Path) -> None:
    path = tmp_path / "marked.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    refused(path, "another application", "0x4d2")


def test_a_database_of_a_newer_version_is_refused_untouched(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        create(store, "ex-1")
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.commit()
    conn.close()
    refused(db_path, f"schema version {LATEST_VERSION + 1}", "newer", "upgrade durablectl")


# reopening and migrations ----------------------------------------------------------------------
def test_reopening_keeps_the_data(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        create(store, "ex-1", '{"n": 1}')
        store.record_workflows(worker_id="w1", workflows=[(WF, "orders")], now=T0)
    with SqliteStore(db_path) as store:
        found = store.get_execution("ex-1")
        assert found is not None and found.input == {"n": 1}
        assert store.known_workflows() == {WF: "orders"}
        assert store.pragma("user_version") == LATEST_VERSION


def test_migrations_are_idempotent(db_path: Path) -> None:
    def schema() -> list[Any]:
        conn = sqlite3.connect(db_path)
        try:
            return conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        finally:
            conn.close()

    with SqliteStore(db_path) as store:
        create(store, "ex-1")
        first = schema()
        store._prepare_schema()  # running the steps again changes nothing
        assert schema() == first
    with SqliteStore(db_path) as store:
        assert schema() == first
        assert [e.execution_id for e in store.list_executions()] == ["ex-1"]


def test_a_marked_file_at_version_zero_is_migrated(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.commit()
    conn.close()
    with SqliteStore(db_path) as store:
        assert store.pragma("user_version") == LATEST_VERSION
        create(store, "ex-1")


def test_a_version_2_database_keeps_its_data_and_only_its_dead_schedule_timers_go(
        db_path: Path) -> None:
    """Migration 3 (issue #7) adds indexes and drops the fired and cancelled timer rows of
    schedules, which nothing reads: executions, their timers and the pending schedule timer
    stay."""
    from durablectl.store.migrations import MIGRATIONS

    conn = sqlite3.connect(db_path, isolation_level=None)
    for step in MIGRATIONS[:2]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    add_schedule(conn)
    conn.executemany(
        "INSERT INTO timers (kind, schedule_id, step_id, due_at, created_at, state)"
        " VALUES ('schedule', 's', '', ?, ?, ?)",
        [(T0 + 60 * i, T0, "fired") for i in range(5)] +
        [(T0 + 600, T0, "cancelled"), (T0 + 660, T0, "pending")])
    conn.execute(
        "INSERT INTO executions (execution_id, workflow_id, status, attempt, max_attempts,"
        " retry_backoff, created_at, updated_at) VALUES ('ex-1', ?, 'sleeping', 1, 3, 2.0,"
        " ?, ?)", (WF, T0, T0))
    conn.execute("INSERT INTO timers (kind, execution_id, step_id, due_at, created_at, state)"
                 " VALUES ('sleep', 'ex-1', 'nap', ?, ?, 'fired')", (T0 + 5, T0))
    conn.close()
    with SqliteStore(db_path) as store:
        assert store.pragma("user_version") == LATEST_VERSION
        with store.raw_read() as reader:
            timers = reader.execute(
                "SELECT kind, state, due_at FROM timers ORDER BY timer_id").fetchall()
        assert timers == [("schedule", "pending", T0 + 660), ("sleep", "fired", T0 + 5)]
        assert [e.execution_id for e in store.list_executions(workflow=WF)] == ["ex-1"]
        assert store.next_due_at() == T0 + 660


def test_stores_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Openers race on the first migration and the switch to WAL: none may mistake another's
    half-seen schema for another application's tables, or give up on a momentary lock. (A
    race: each round catches a regression only sometimes, so there are many rounds.)"""
    errors: list[BaseException] = []

    def open_store(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            SqliteStore(path).close()
        except BaseException as exc:
            errors.append(exc)

    for round_ in range(60):
        path = tmp_path / f"race-{round_}.db"
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=open_store, args=(path, barrier)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert errors == []
        with SqliteStore(path) as store:
            assert store.pragma("user_version") == LATEST_VERSION


# locking and the writer ------------------------------------------------------------------------
def test_a_write_blocked_past_busy_timeout_is_a_storage_error(db_path: Path) -> None:
    with SqliteStore(db_path, busy_timeout_ms=50) as store:
        holder = sqlite3.connect(db_path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageError, match="locked"):
                create(store, "ex-1")
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        create(store, "ex-1")  # the store is fine once the lock is gone
        assert store.get_execution("ex-1") is not None


def test_a_closed_store_refuses_work(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.close()
    with pytest.raises(StorageError):
        create(store, "ex-1")
    with pytest.raises(StorageError):
        store.submit(store.create_execution, execution_id="ex-1", workflow_id=WF,
                     input_json=None, max_attempts=3, retry_backoff=2.0, now=T0)
    store.close()  # twice is fine


def test_a_closed_store_fails_grouped_writes_instead_of_hanging(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.submit(store.create_execution, execution_id="ex-1", workflow_id=WF,
                 input_json=None, max_attempts=3, retry_backoff=2.0, now=T0).result(timeout=5)
    store.close()  # the writer thread is gone now
    with pytest.raises(StorageError, match="closed"):
        store.submit(store.create_execution, execution_id="ex-2", workflow_id=WF,
                     input_json=None, max_attempts=3, retry_backoff=2.0,
                     now=T0).result(timeout=2)


def hold_writer(store: SqliteStore) -> tuple[threading.Event, Future[Any]]:
    """Occupy the writer thread so that what is submitted next lands in one batch."""
    started, gate = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        assert gate.wait(5)

    blocker = store.submit(block)
    assert started.wait(5)
    return gate, blocker


def test_a_failing_job_rolls_back_alone_within_one_batch(store: SqliteStore) -> None:
    batches: list[list[AuditEntry]] = []
    store.add_commit_listener(batches.append)
    gate, blocker = hold_writer(store)

    def half_done() -> None:
        create(store, "ex-half")  # joins the batch, then the job fails
        raise LeaseLost("ex-half", "w1")

    good_one = store.submit(store.create_execution, execution_id="ex-1", workflow_id=WF,
                            input_json=None, max_attempts=3, retry_backoff=2.0, now=T0)
    bad = store.submit(half_done)
    good_two = store.submit(store.create_execution, execution_id="ex-2", workflow_id=WF,
                            input_json=None, max_attempts=3, retry_backoff=2.0, now=T0)
    gate.set()
    blocker.result(timeout=5)
    assert good_one.result(timeout=5) == ("ex-1", True)
    with pytest.raises(LeaseLost):
        bad.result(timeout=5)
    assert good_two.result(timeout=5) == ("ex-2", True)
    assert store.get_execution("ex-half") is None
    assert store.get_execution("ex-1") is not None and store.get_execution("ex-2") is not None
    # one commit for the three jobs, announcing only what committed
    assert [[e.execution_id for e in batch] for batch in batches] == [["ex-1", "ex-2"]]


def test_a_batch_writes_its_audit_rows_in_job_order_and_a_bad_one_fails_alone(
        store: SqliteStore) -> None:
    """The audit rows of a batch's jobs go in at the end of the batch, in one statement: seqs
    still follow job order, each job's announced entries carry their stored seqs, and a job
    whose audit data JSON cannot hold fails alone (its execution is not stored)."""
    batches: list[list[AuditEntry]] = []
    store.add_commit_listener(batches.append)
    gate, blocker = hold_writer(store)

    def unencodable_audit() -> None:
        def job(conn: sqlite3.Connection, txn: Any) -> None:
            create(store, "ex-bad")
            store._add_audit(conn, txn, kind="note", execution_id="ex-bad", attempt=1,
                             data={"not json": object()}, now=T0, audit=True)

        store._write(job)

    jobs = [store.submit(store.create_execution, execution_id=f"ex-{i}", workflow_id=WF,
                         input_json=None, max_attempts=3, retry_backoff=2.0, now=T0)
            for i in range(3)]
    bad = store.submit(unencodable_audit)
    last = store.submit(store.create_execution, execution_id="ex-3", workflow_id=WF,
                        input_json=None, max_attempts=3, retry_backoff=2.0, now=T0)
    gate.set()
    blocker.result(timeout=5)
    assert [job.result(timeout=5) for job in [*jobs, last]] == [
        (f"ex-{i}", True) for i in range(4)]
    with pytest.raises(TypeError):
        bad.result(timeout=5)
    assert store.get_execution("ex-bad") is None
    stored = sorted((e.seq, e.execution_id) for i in range(4)
                    for e in store.list_audit_entries(f"ex-{i}"))
    assert [eid for _seq, eid in stored] == ["ex-0", "ex-1", "ex-2", "ex-3"]
    assert [seq for seq, _eid in stored] == list(range(stored[0][0], stored[0][0] + 4))
    assert [[(e.seq, e.execution_id) for e in batch] for batch in batches] == [stored]


def test_a_failed_commit_fails_every_job_of_the_batch(store: SqliteStore) -> None:
    gate, blocker = hold_writer(store)

    def orphan_step() -> None:
        # a foreign key checked at COMMIT: the commit itself fails
        def job(conn: sqlite3.Connection, txn: Any) -> None:
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute("INSERT INTO steps (execution_id, step_id, kind, seq, attempt)"
                         " VALUES ('missing', 's', 'step', 1, 1)")

        store._write(job)

    first = store.submit(store.create_execution, execution_id="ex-1", workflow_id=WF,
                         input_json=None, max_attempts=3, retry_backoff=2.0, now=T0)
    breaking = store.submit(orphan_step)
    gate.set()
    blocker.result(timeout=5)
    for future in (first, breaking):
        with pytest.raises(StorageError):
            future.result(timeout=5)
    assert store.get_execution("ex-1") is None
    create(store, "ex-1")  # the next batch commits normally
    assert store.get_execution("ex-1") is not None


def test_grouped_writes_commit_in_submission_order(store: SqliteStore) -> None:
    gate, blocker = hold_writer(store)
    futures = [store.submit(store.create_execution, execution_id=f"ex-{i}", workflow_id=WF,
                            input_json=None, max_attempts=3, retry_backoff=2.0, now=T0 + i)
               for i in range(20)]
    gate.set()
    blocker.result(timeout=5)
    assert [f.result(timeout=5) for f in futures] == [(f"ex-{i}", True) for i in range(20)]
    with store.raw_read() as reader:
        seqs = [row[0] for row in reader.execute(
            "SELECT execution_id FROM audit ORDER BY seq").fetchall()]
    assert seqs == [f"ex-{i}" for i in range(20)]


def test_a_batch_records_many_executions_steps_together_as_each_alone(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's steps of distinct executions are recorded with one UPDATE and one
    executemany; the outcome is the same as one job after the other: each its seq, its row,
    its audit entry in job order, a lost lease refused alone, two steps of one execution in
    order."""
    ids = [f"ex-{i}" for i in range(6)]
    for i, execution_id in enumerate(ids):
        create(store, execution_id)
        assert store.claim_execution(execution_id, worker_id="w2" if i == 5 else "w1",
                                     workflow_ids=[WF], now=T0, real_now=R0,
                                     lease_until=R0 + 30) is not None
    grouped: list[int] = []
    together = store._record_steps_together

    def spy(conn: sqlite3.Connection, batch: list[Any]) -> Any:
        done = together(conn, batch)
        grouped.append(len(done))
        return done

    monkeypatch.setattr(store, "_record_steps_together", spy)

    def record(execution_id: str, step_id: str, value: int) -> Future[int]:
        return store.submit(store.record_step, execution_id=execution_id, worker_id="w1",
                            step_id=step_id, kind="step", result_json=str(value), error=None,
                            attempt=1, started_at=T0, completed_at=T0 + 1, now=T0 + 1,
                            audit_entries=[("note", {"message": f"{execution_id}/{step_id}"})])

    gate, blocker = hold_writer(store)
    futures = [record(execution_id, "a", i) for i, execution_id in enumerate(ids[:5])]
    second = record("ex-0", "b", 10)  # a second step of ex-0 in the same batch
    gate.set()
    blocker.result(timeout=5)
    assert [f.result(timeout=5) for f in futures] == [1, 1, 1, 1, 1]
    assert second.result(timeout=5) == 2
    assert grouped == [4]  # ex-1..ex-4; ex-0's two steps ran alone, in order
    # a step whose lease is another worker's fails alone (the batch runs again job by job)
    gate, blocker = hold_writer(store)
    again = [record(execution_id, "c", 20 + i) for i, execution_id in enumerate(ids[1:], 1)]
    gate.set()
    blocker.result(timeout=5)
    assert [f.result(timeout=5) for f in again[:4]] == [2, 2, 2, 2]
    with pytest.raises(LeaseLost):
        again[4].result(timeout=5)
    assert grouped == [4, 4]
    with store.raw_read() as reader:
        steps = reader.execute("SELECT execution_id, step_id, seq, result FROM steps"
                               " ORDER BY execution_id, seq").fetchall()
        notes = [row[0] for row in reader.execute(
            "SELECT json_extract(data, '$.message') FROM audit WHERE kind = 'note'"
            " ORDER BY seq").fetchall()]
    assert steps == [("ex-0", "a", 1, "0"), ("ex-0", "b", 2, "10"),
                     ("ex-1", "a", 1, "1"), ("ex-1", "c", 2, "21"),
                     ("ex-2", "a", 1, "2"), ("ex-2", "c", 2, "22"),
                     ("ex-3", "a", 1, "3"), ("ex-3", "c", 2, "23"),
                     ("ex-4", "a", 1, "4"), ("ex-4", "c", 2, "24")]
    assert notes == ["ex-0/a", "ex-1/a", "ex-2/a", "ex-3/a", "ex-4/a", "ex-0/b",
                     "ex-1/c", "ex-2/c", "ex-3/c", "ex-4/c"]


def test_a_direct_write_waits_for_the_writer_thread(store: SqliteStore) -> None:
    gate, blocker = hold_writer(store)
    done = threading.Event()

    def direct() -> None:
        create(store, "ex-direct")
        done.set()

    thread = threading.Thread(target=direct)
    thread.start()
    assert not done.wait(0.05)  # the writer thread owns the connection for now
    gate.set()
    thread.join(timeout=5)
    assert done.is_set() and store.get_execution("ex-direct") is not None
    blocker.result(timeout=5)


# commits on the loop (synchronous NORMAL / OFF) ----------------------------------------------
def writer_threads() -> set[str]:
    return {t.name for t in threading.enumerate()
            if t.name in ("durablectl-writer", "durablectl-checkpoint")}


async def loop_create(store: SqliteStore, execution_id: str, now: float = T0) -> Any:
    return await FutureBridge(store, asyncio.get_running_loop()).call(
        store.create_execution, execution_id=execution_id, workflow_id=WF, input_json=None,
        max_attempts=3, retry_backoff=2.0, now=now)


@pytest.mark.parametrize("synchronous", ["NORMAL", "OFF"])
def test_at_normal_a_loops_writes_are_committed_on_the_loop(db_path: Path,
                                                             synchronous: str) -> None:
    before = writer_threads()
    with SqliteStore(db_path, synchronous=synchronous) as store:
        async def main() -> list[Any]:
            return await asyncio.gather(*(loop_create(store, f"ex-{i}") for i in range(5)))

        assert asyncio.run(main()) == [(f"ex-{i}", True) for i in range(5)]
        # no writer thread: the batch ran on the loop; a checkpointer took over checkpoints
        assert writer_threads() - before == {"durablectl-checkpoint"}
        assert store.pragma("wal_autocheckpoint") == 0
        assert store.count_executions() == {"pending": 5}
    with SqliteStore(db_path) as reopened:  # committed, not just visible to the writer
        assert reopened.count_executions() == {"pending": 5}


@pytest.mark.full_level
def test_at_full_a_loops_writes_go_to_the_writer_thread(store: SqliteStore) -> None:
    async def main() -> Any:
        return await loop_create(store, "ex-1")

    assert asyncio.run(main()) == ("ex-1", True)
    assert "durablectl-writer" in writer_threads()
    assert store.pragma("wal_autocheckpoint") == 1000  # SQLite's own checkpoints, as before


def test_a_write_lock_held_elsewhere_never_stalls_the_loop(db_path: Path) -> None:
    """Another process's transaction (a CLI write, a prune batch) holds the lock: the loop's
    batch goes to the writer thread, which waits for it, and the loop runs on meanwhile; the
    loop's later writes queue behind it, in order."""
    with SqliteStore(db_path, synchronous="NORMAL") as store:
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        async def main() -> int:
            first = asyncio.ensure_future(loop_create(store, "ex-first"))
            ticks = 0
            for _ in range(20):  # 0.2 s of the loop running while the lock is held
                await asyncio.sleep(0.01)
                ticks += 1
            second = asyncio.ensure_future(loop_create(store, "ex-second", T0 + 1))
            await asyncio.sleep(0.05)
            assert not first.done() and not second.done()
            holder.execute("ROLLBACK")
            assert await first == ("ex-first", True)
            assert await second == ("ex-second", True)
            return ticks

        try:
            assert asyncio.run(main()) == 20
        finally:
            holder.close()
        with store.raw_read() as reader:
            order = [row[0] for row in reader.execute(
                "SELECT execution_id FROM audit ORDER BY seq").fetchall()]
        assert order == ["ex-first", "ex-second"]


def test_blocking_writes_on_a_committing_loop_go_to_the_writer_thread(db_path: Path) -> None:
    """A plain write call (or ``submit(...).result()``) made on the loop blocks the loop until
    it is committed: it must never wait for the loop's own next batch."""
    with SqliteStore(db_path, synchronous="NORMAL") as store:
        async def main() -> None:
            assert await loop_create(store, "ex-loop") == ("ex-loop", True)
            submitted = store.submit(store.create_execution, execution_id="ex-submitted",
                                     workflow_id=WF, input_json=None, max_attempts=3,
                                     retry_backoff=2.0, now=T0)
            assert submitted.result(timeout=5) == ("ex-submitted", True)
            create(store, "ex-direct")  # the writer thread exists now: a direct write uses it
            assert await loop_create(store, "ex-after") == ("ex-after", True)

        asyncio.run(main())
        assert store.count_executions() == {"pending": 4}


def test_commits_on_the_loop_leave_checkpoints_to_their_thread(db_path: Path) -> None:
    with SqliteStore(db_path, synchronous="NORMAL") as store:
        async def main() -> None:
            for i in range(CHECKPOINT_EVERY_COMMITS + 5):  # one commit each
                await loop_create(store, f"ex-{i}")

        asyncio.run(main())
        checkpointer = store._checkpointer
        assert checkpointer is not None
        deadline = time.monotonic() + 5
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints >= 1
        with store.raw_read() as reader:  # (busy, frames in the WAL, frames checkpointed)
            busy, frames, done = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and done == frames


def test_a_write_given_up_before_the_loops_batch_ran_is_not_run(db_path: Path) -> None:
    with SqliteStore(db_path, synchronous="NORMAL") as store:
        async def main() -> None:
            abandoned = asyncio.ensure_future(loop_create(store, "ex-abandoned"))
            kept = asyncio.ensure_future(loop_create(store, "ex-kept"))
            await asyncio.sleep(0)  # both submitted; their batch runs a pass or two later
            abandoned.cancel()
            assert await kept == ("ex-kept", True)
            assert abandoned.cancelled()

        asyncio.run(main())
        assert store.get_execution("ex-kept") is not None
        assert store.get_execution("ex-abandoned") is None


def test_closing_fails_writes_the_loop_has_not_committed_yet(db_path: Path) -> None:
    store = SqliteStore(db_path, synchronous="NORMAL")

    async def main() -> None:
        pending = asyncio.ensure_future(loop_create(store, "ex-1"))
        await asyncio.sleep(0)  # submitted; its batch runs on the loop's next pass
        store.close()
        with pytest.raises(StorageError, match="closed"):
            await pending

    asyncio.run(main())
    with SqliteStore(db_path) as reopened:
        assert reopened.get_execution("ex-1") is None


def test_registering_a_worker_survives_a_failing_neighbour_in_its_batch(
        store: SqliteStore) -> None:
    create(store, "ex-1")
    gate, blocker = hold_writer(store)
    register = store.submit(store.register_worker, worker_id="w1", pid=os.getpid(),
                            hostname="box", real_now=R0)
    failing = store.submit(store.record_step, execution_id="ex-1", worker_id="w9",
                           step_id="a", kind="step", result_json="1", error=None, attempt=1,
                           started_at=T0, completed_at=T0, now=T0)
    gate.set()
    blocker.result(timeout=5)
    register.result(timeout=5)
    with pytest.raises(LeaseLost):
        failing.result(timeout=5)
    assert [w.worker_id for w in store.live_workers()] == ["w1"]
    with SqliteStore(store.path) as other:
        assert [w.worker_id for w in other.live_workers()] == ["w1"]


# work that must not grow with history ----------------------------------------------------------
def _vm_callbacks(conn: sqlite3.Connection, query: Any) -> tuple[Any, int]:
    """``query()``'s result and how many times SQLite's progress handler fired on ``conn``
    (once per 100 virtual-machine steps): a measure of rows visited, not of time."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        return query(), count
    finally:
        conn.set_progress_handler(None, 0)


def test_finding_queued_schedule_ticks_does_not_read_every_tick(store: SqliteStore) -> None:
    """A schedule keeps a row per tick (a minute's schedule: half a million a year), and the
    daemon asks whether any tick is queued after every execution that ends: the answer must
    cost the same with twenty thousand ticks recorded as with ten."""
    with sqlite3.connect(store.path) as conn:
        add_schedule(conn, overlap="queue")

    def record_ticks(first: int, last: int, outcome: str = "started") -> None:
        with sqlite3.connect(store.path) as conn:
            conn.executemany(
                "INSERT INTO schedule_runs (schedule_id, due_at, outcome, execution_id,"
                " recorded_at) VALUES ('s', ?, ?, NULL, ?)",
                [(T0 + 60 * i, outcome, T0) for i in range(first, last)])

    with store.raw_read() as reader:
        record_ticks(0, 10)
        few = _vm_callbacks(reader, store.has_queued_schedule_runs)
        record_ticks(10, 20_000)
        many = _vm_callbacks(reader, store.has_queued_schedule_runs)
        record_ticks(20_000, 20_001, outcome="queued")
        queued = _vm_callbacks(reader, store.has_queued_schedule_runs)
    assert few[0] is False and many[0] is False and queued[0] is True
    assert many[1] <= few[1] + 2 and queued[1] <= few[1] + 2, (few, many, queued)


def _add_executions(store: SqliteStore, workflow_id: str, status: str, first: int,
                    last: int) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.executemany(
            "INSERT INTO executions (execution_id, workflow_id, status, attempt, max_attempts,"
            " retry_backoff, created_at, updated_at) VALUES (?, ?, ?, 1, 3, 2.0, ?, ?)",
            [(f"{workflow_id}-{status}-{i:06d}", workflow_id, status, T0 + i, T0 + i)
             for i in range(first, last)])


def test_one_workflows_queued_or_running_executions_are_found_past_its_history(
        store: SqliteStore) -> None:
    """``list --workflow W --status running`` and the daemon's check for queued executions of
    workflows it does not run look at a workflow's active executions: their cost must not
    grow with the thousands it has finished."""
    _add_executions(store, "w.old", "running", 0, 3)
    _add_executions(store, "w.old", "completed", 0, 10)

    def running() -> list[str]:
        return [e.execution_id for e in store.list_executions(status="running",
                                                              workflow="w.old", limit=5)]

    with store.raw_read() as reader:
        few = _vm_callbacks(reader, running)
    few_marked = _vm_callbacks(store._wconn, lambda: store.mark_unloaded(
        workflow_ids=["w.other"], reason_prefix="not loaded: "))
    _add_executions(store, "w.old", "completed", 10, 20_000)
    _add_executions(store, "w.old", "running", 3, 4)  # and one more to find
    with store.raw_read() as reader:
        many = _vm_callbacks(reader, running)
    many_marked = _vm_callbacks(store._wconn, lambda: store.mark_unloaded(
        workflow_ids=["w.other"], reason_prefix="not loaded: "))
    assert few[0] == [f"w.old-running-{i:06d}" for i in (2, 1, 0)]
    assert many[0] == [f"w.old-running-{i:06d}" for i in (3, 2, 1, 0)]
    assert (few_marked[0], many_marked[0]) == (3, 1)  # no worker holds them: marked once
    assert many[1] <= few[1] + 2 and many_marked[1] <= few_marked[1] + 2, \
        (few, many, few_marked, many_marked)
    newest = store.list_executions(workflow="w.old", limit=3)  # no status: merged per status
    assert [e.execution_id for e in newest] == [f"w.old-completed-{i:06d}"
                                                 for i in (19_999, 19_998, 19_997)]


def test_taking_a_buffered_signal_does_not_step_over_the_consumed_ones(
        store: SqliteStore) -> None:
    """A workflow that waits for the same signal in a loop consumes one per round; finding the
    next buffered one must not read the ones consumed before (a 1,000-round loop would cost
    O(n) per round, O(n^2) in all)."""
    create(store, "e1")
    found = store.claim_execution("e1", worker_id="w1", workflow_ids=[WF], now=T0,
                                  real_now=R0, lease_until=R0 + 60)
    assert found is not None

    def consumed(first: int, last: int) -> None:
        with sqlite3.connect(store.path) as conn:
            conn.executemany(
                "INSERT INTO signals (execution_id, signal_id, seq, payload, created_at,"
                " consumed_by, consumed_at) VALUES ('e1', 'go', ?, 'null', ?, 'w', ?)",
                [(seq, T0, T0) for seq in range(first, last)])

    def take(round_: int) -> Any:
        store.append_signal(execution_id="e1", signal_id="go", payload_json=str(round_),
                            now=T0)
        return _vm_callbacks(store._wconn, lambda: store.consume_signal(
            execution_id="e1", worker_id="w1", signal_id="go", step_id=f"wait-{round_}",
            attempt=1, now=T0))

    consumed(1, 11)
    few = take(1)
    consumed(11 + 1, 20_000)  # the seq after the one just taken, on to twenty thousand
    many = take(2)
    assert (few[0].result["payload"], many[0].result["payload"]) == (1, 2)
    assert many[1] <= few[1] + 2, (few[1], many[1])


def test_checking_which_executions_ended_does_not_read_every_active_one(
        store: SqliteStore) -> None:
    """A daemon asks once a second which of its kept runs' executions another process ended:
    the answer must cost the same with twenty thousand executions parked as with hundreds."""
    _add_executions(store, WF, "sleeping", 0, 400)
    _add_executions(store, WF, "completed", 0, 99)
    # a full chunk of ids, as a daemon keeping hundreds of runs asks
    asked = [f"{WF}-sleeping-{i:06d}" for i in range(400)] + \
        [f"{WF}-completed-{i:06d}" for i in range(99)] + ["gone"]
    ended = {f"{WF}-completed-{i:06d}" for i in range(99)} | {"gone"}
    with store.raw_read() as reader:
        few = _vm_callbacks(reader, lambda: store.ended_among(asked))
        _add_executions(store, WF, "sleeping", 400, 20_000)
        many = _vm_callbacks(reader, lambda: store.ended_among(asked))
    assert few[0] == ended and many[0] == ended
    assert many[1] <= few[1] + 2, (few[1], many[1])


def test_listing_stuck_executions_does_not_sort_every_failure(store: SqliteStore) -> None:
    """``operator stuck`` shows the newest failed executions and those queued for a workflow
    no worker runs: its cost must not grow with the failures of years."""
    from durablectl.model import UNLOADED_REASON

    _add_executions(store, WF, "failed", 0, 10)
    _add_executions(store, WF, "pending", 0, 1)
    with sqlite3.connect(store.path) as conn:  # queued for a workflow nobody runs, newest
        conn.execute("UPDATE executions SET status_reason = ?, updated_at = ?"
                     " WHERE status = 'pending'", (UNLOADED_REASON + WF, T0 + 50_000))

    def newest() -> list[str]:
        return [e.execution_id for e in store.list_stuck_executions(limit=3)]

    with store.raw_read() as reader:
        few = _vm_callbacks(reader, newest)
        _add_executions(store, WF, "failed", 10, 20_000)
        many = _vm_callbacks(reader, newest)
    assert few[0] == [f"{WF}-pending-000000", f"{WF}-failed-000009", f"{WF}-failed-000008"]
    assert many[0] == [f"{WF}-pending-000000", f"{WF}-failed-019999", f"{WF}-failed-019998"]
    assert many[1] <= few[1] + 2, (few[1], many[1])
