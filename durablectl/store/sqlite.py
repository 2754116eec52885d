"""The SQLite store: every SQL statement of the project lives in this module.

One write connection, used by one transaction at a time (``BEGIN IMMEDIATE`` so a writer waits
for the lock up front instead of failing mid-transaction). Writes either run inline under a lock
(the CLI, scripts) or, once an engine calls :meth:`SqliteStore.submit`, through a writer thread
that groups every job it finds queued into one commit. Each job runs in its own ``SAVEPOINT``:
a job that fails its own check rolls back alone; a failed ``COMMIT`` fails the whole batch.
Reads use one connection per thread; WAL readers never block the writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from durablectl.clock import monotonic, to_datetime
from durablectl.codec import compact_encoder
from durablectl.errors import (
    DurableError,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionNotActive,
    ExecutionNotFound,
    IncompatibleDatabase,
    LeaseLost,
    StorageError,
)
from durablectl.model import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    PARKED_STATUSES,
    AuditEntry,
    ErrorInfo,
    Execution,
    StepRecord,
    WorkerInfo,
)
from durablectl.store import retention
from durablectl.store.base import Claim, CommitListener, History, JobSink, NewTimer
from durablectl.store.migrations import APPLICATION_ID, LATEST_VERSION, MIGRATIONS
from durablectl.store.sqlite_loop import AlreadyRunning, Checkpointer, Job, LoopWriter
from durablectl.store.sqlite_operator import OperatorQueries
from durablectl.store.sqlite_schedules import ScheduleQueries

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

log = logging.getLogger(__name__)

T = TypeVar("T")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# audit data as stored: compact JSON, ASCII (an encoder made once, not one per row)
_compact_json = compact_encoder(ensure_ascii=True, allow_nan=True)
_MAX_BATCH = 512  # jobs per grouped commit; bounds how long one batch holds the write lock


class _Locked(Exception):
    """_attempt_batch: the write lock is another connection's, and the batch was not to wait."""

_EXECUTION_COLUMNS = (
    "execution_id, workflow_id, status, status_reason, attempt, max_attempts, input, result,"
    " error, created_at, updated_at, deadline, idempotency_key, forked_from_execution,"
    " forked_from_step, lease_owner, wakeups"
)
# a claim also needs to know whether there is any history to load
_CLAIM_COLUMNS = _EXECUTION_COLUMNS + (
    ", step_seq, EXISTS (SELECT 1 FROM timers t WHERE t.execution_id = executions.execution_id"
    " AND t.state = 'pending' AND t.kind IN ('sleep', 'signal'))"
)
_STEP_COLUMNS = "step_id, kind, result, error, started_at, completed_at, attempt, seq"
_STEP_UPSERT = (
    "INSERT INTO steps (execution_id, step_id, kind, seq, result, error, attempt, started_at,"
    " completed_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (execution_id, step_id) DO UPDATE"
    " SET kind = excluded.kind, seq = excluded.seq, result = excluded.result,"
    " error = excluded.error, attempt = excluded.attempt, started_at = excluded.started_at,"
    " completed_at = excluded.completed_at"
)
# the distinct workflow ids of all executions, one index seek each (not one row per execution)
_WORKFLOW_IDS_IN_USE = (
    "WITH RECURSIVE ids(id) AS (SELECT min(workflow_id) FROM executions UNION ALL"
    " SELECT (SELECT min(workflow_id) FROM executions WHERE workflow_id > ids.id) FROM ids"
    " WHERE ids.id IS NOT NULL) SELECT id FROM ids WHERE id IS NOT NULL"
)


def _error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else json.dumps(error.to_json())


def _execution(row: Sequence[Any], *, claimed_by: str | None = None,
               attempt: int | None = None) -> Execution:
    """A row as a record; ``claimed_by``: as it is once that worker has claimed it."""
    forked = None
    if row[13] is not None:
        forked = {"execution_id": row[13], "step_id": row[14]}
    return Execution(
        execution_id=row[0], workflow_id=row[1],
        status="running" if claimed_by else row[2],
        status_reason=None if claimed_by else row[3],
        attempt=row[4] if attempt is None else attempt, max_attempts=row[5],
        input=None if row[6] is None else json.loads(row[6]),
        result=None if row[7] is None else json.loads(row[7]),
        error=ErrorInfo.from_json(None if row[8] is None else json.loads(row[8])),
        created_at=to_datetime(row[9]),  # type: ignore[arg-type]
        updated_at=to_datetime(row[10]),  # type: ignore[arg-type]
        deadline=to_datetime(row[11]), idempotency_key=row[12], forked_from=forked,
        lease_owner=claimed_by or row[15],
    )


def _step(row: Sequence[Any]) -> StepRecord:
    started, completed = row[4], row[5]
    duration = None
    if started is not None and completed is not None:
        duration = round((completed - started) * 1000.0, 3)
    return StepRecord(
        step_id=row[0], kind=row[1], result=None if row[2] is None else json.loads(row[2]),
        error=ErrorInfo.from_json(None if row[3] is None else json.loads(row[3])),
        started_at=to_datetime(started), completed_at=to_datetime(completed),
        duration_ms=duration, attempt=row[6], seq=row[7],
    )


def _audit(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(seq=row[0], at=to_datetime(row[1]),  # type: ignore[arg-type]
                      kind=row[2], execution_id=row[3], attempt=row[4], data=json.loads(row[5]))


class _Txn:
    """What one transaction has produced so far: audit entries to announce after commit."""

    def __init__(self) -> None:
        # (seq, at, kind, execution_id, attempt, data): AuditEntry objects are made after the
        # commit, and only when a listener wants them
        self.entries: list[tuple[int, float, str, str | None, int, dict[str, Any]]] = []
        # (at, kind, execution_id, attempt, data, persist): written in one executemany at the
        # end of the job, which matters for jobs that touch a hundred executions
        self.pending: list[tuple[float, str, str | None, int, dict[str, Any], bool]] = []


class _GroupWriter:
    """The writer thread: drains the queue into one transaction per batch."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], JobSink] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name="durablectl-writer", daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], Any], sink: JobSink) -> None:
        self._queue.put((call, sink))

    def idle(self) -> bool:
        """Nothing queued (a batch may still be running: the store's write lock tells)."""
        return self._queue.empty()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        # a job that raced with close() would otherwise wait for ever
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(self._store._closed_error())

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            # a caller that gave up (its asyncio wrapper was cancelled) drops its job here;
            # once running, a job's future can no longer be cancelled
            batch = [job for job in batch if job[1].set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                self._store._run_batch(batch)
            except BaseException:  # the writer thread must survive anything
                log.exception("grouped writer: batch failed")
                for _call, future in batch:
                    if not future.done():
                        future.set_exception(StorageError("the grouped writer failed"))


class SqliteStore(ScheduleQueries, OperatorQueries):
    """A durablectl database in one SQLite file (WAL mode)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000) -> None:
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = str(Path(path).expanduser().resolve())
        self.synchronous = synchronous
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._lock_dir = Path(self.path + ".workers")
        self._worker_locks: dict[str, int] = {}
        # (listener, wanted): wanted() False skips making the entries for it (None: always)
        self._listeners: list[tuple[CommitListener, Callable[[], bool] | None]] = []
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_conns_lock = threading.Lock()
        self._wlock = threading.RLock()
        self._writer: _GroupWriter | None = None
        self._writer_lock = threading.Lock()
        # at NORMAL and OFF a commit does not wait for the disk: an event loop's writes are
        # committed on that loop (store/sqlite_loop.py)
        self.commit_on_loop = synchronous in ("OFF", "NORMAL")
        self._loop_writers: list[LoopWriter] = []
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        self._create_private_file()
        self._repair_companion_modes()
        # configured only once the file is known to be ours: journal_mode = WAL rewrites the
        # header of whatever file it is given
        self._wconn = self._connect(configure=False)
        self._wconn_busy_ms = self.busy_timeout_ms  # the write connection's, now
        try:
            self._prepare_schema()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._wconn.close()  # and with it the -wal/-shm files it may have made
            raise

    # connections -----------------------------------------------------------------------------
    def _create_private_file(self) -> None:
        """The database is readable by its owner only (SPEC §8); SQLite gives its WAL and shm
        files the same mode."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.close(fd)

    def _repair_companion_modes(self) -> None:
        """SQLite gives the -wal and -shm files it creates the database file's mode: a read of a
        0400 file leaves 0400 companions behind, which keep every write failing as read-only
        after the file is made writable again. Give them the file's mode back then."""
        try:
            if not os.access(self.path, os.R_OK | os.W_OK):
                return
            mode = os.stat(self.path).st_mode & 0o777
        except OSError:
            return
        for suffix in ("-wal", "-shm"):
            companion = self.path + suffix
            if os.path.exists(companion) and not os.access(companion, os.R_OK | os.W_OK):
                with contextlib.suppress(OSError):  # not ours: SQLite reports it as it is
                    os.chmod(companion, mode)

    def _connect(self, *, configure: bool = True) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_ms / 1000.0)
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        except sqlite3.DatabaseError as exc:
            raise IncompatibleDatabase(
                f"{self.path} is not a durablectl database (SQLite says: {exc})"
            ) from exc
        if configure:
            self._configure(conn)
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        # Switching a fresh file to WAL while another process does the same can answer "locked"
        # at once, without the busy handler (SQLite avoids a lock-upgrade deadlock that way):
        # retry it for up to busy_timeout.
        give_up = monotonic() + self.busy_timeout_ms / 1000.0
        try:
            while True:
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as exc:
                    text = str(exc)
                    if ("locked" not in text and "busy" not in text) or monotonic() > give_up:
                        raise
                    time.sleep(0.005)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise self._storage_error(exc) from exc
            raise IncompatibleDatabase(
                f"{self.path} is not a durablectl database (SQLite says: {exc})"
            ) from exc

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if conn is None:
            if self._closed:
                raise self._closed_error()
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.reader = conn
            with self._read_conns_lock:
                self._read_conns.append(conn)
        return conn

    def _prepare_schema(self) -> None:
        conn = self._wconn
        try:
            # one statement, one snapshot: read separately, another process's first migration
            # could commit in between and its tables look like another application's
            app_id, version, tables = conn.execute(
                "SELECT (SELECT application_id FROM pragma_application_id),"
                " (SELECT user_version FROM pragma_user_version),"
                " (SELECT count(*) FROM sqlite_master WHERE type = 'table')"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            # read-only folder, lock, I/O: say that, not "not a durablectl database"
            if isinstance(exc, sqlite3.OperationalError):
                raise self._storage_error(exc) from exc
            raise IncompatibleDatabase(
                f"{self.path} is not a durablectl database (SQLite says: {exc})"
            ) from exc
        if app_id == 0 and version == 0 and tables:
            raise IncompatibleDatabase(
                f"{self.path} is a SQLite database of another application ({tables} tables, "
                "no durablectl marker); refusing to touch it"
            )
        if app_id not in (0, APPLICATION_ID):
            raise IncompatibleDatabase(
                f"{self.path} belongs to another application (application_id {app_id:#x}); "
                "refusing to touch it"
            )
        if version > LATEST_VERSION:
            raise IncompatibleDatabase(
                f"{self.path} has schema version {version}, newer than this durablectl "
                f"understands ({LATEST_VERSION}); upgrade durablectl"
            )
        self._configure(conn)
        for number in range(version + 1, LATEST_VERSION + 1):
            with self._wlock:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    current = conn.execute("PRAGMA user_version").fetchone()[0]
                    if current >= number:  # another process migrated meanwhile
                        conn.execute("COMMIT")
                        continue
                    for statement in MIGRATIONS[number - 1]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {number}")
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise StorageError(
                        f"could not migrate {self.path} to schema version {number}: {exc}"
                    ) from exc
                log.info("migrated %s to schema version %d", self.path, number)

    def close(self) -> None:
        with self._writer_lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
            loop_writers, self._loop_writers = self._loop_writers, []
        closed = self._closed_error()
        for loop_writer in loop_writers:
            loop_writer.fail_pending(closed)
        if writer is not None:
            writer.stop()  # runs what was submitted before, fails anything after
        if self._checkpointer is not None:
            self._checkpointer.stop()
        for fd in self._worker_locks.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._worker_locks.clear()
        with self._read_conns_lock:
            for conn in self._read_conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._read_conns.clear()
        with self._wlock, contextlib.suppress(sqlite3.Error):
            self._wconn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pragma(self, name: str) -> Any:
        """Read a pragma on the write connection (benchmarks print the settings in force)."""
        with self._wlock:
            return self._wconn.execute(f"PRAGMA {name}").fetchone()[0]

    # transactions ----------------------------------------------------------------------------
    def add_commit_listener(self, listener: CommitListener, *,
                            wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        item = (listener, wanted)
        self._listeners.append(item)

        def remove() -> None:
            if item in self._listeners:
                self._listeners.remove(item)

        return remove

    def submit(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run a write method of this store in the next grouped commit of the writer thread
        (whatever the level: its caller may block on the future, even on an event loop)."""
        future: Future[T] = Future()
        self._thread_writer().submit(partial(method, *args, **kwargs), future)
        return future

    def submit_to(self, sink: JobSink, method: Callable[..., Any], /, *args: Any,
                  **kwargs: Any) -> None:
        """As ``submit``, with the outcome handed to ``sink`` instead of a new future. At
        NORMAL and OFF, a write submitted from an event loop is committed on that loop, and
        ``sink`` is settled there: the loop must not block waiting for it."""
        if self.commit_on_loop:
            # no asyncio imported, no loop running (the CLI never imports it: start-up time)
            aio = sys.modules.get("asyncio")
            loop = aio._get_running_loop() if aio is not None else None
            if loop is not None:
                self._loop_writer(loop).add(partial(method, *args, **kwargs), sink)
                return
        self._thread_writer().submit(partial(method, *args, **kwargs), sink)

    def _closed_error(self) -> StorageError:
        """What a write to a closed store fails with, wherever it is refused."""
        return StorageError(f"the store for {self.path} is closed")

    def _thread_writer(self) -> _GroupWriter:
        with self._writer_lock:  # so that close() cannot strand a job in a stopped queue
            if self._closed:
                raise self._closed_error()
            if self._writer is None:
                self._writer = _GroupWriter(self)
            return self._writer

    def _loop_writer(self, loop: AbstractEventLoop) -> LoopWriter:
        writers = self._loop_writers
        if writers and writers[-1].loop is loop:
            return writers[-1]
        with self._writer_lock:
            if self._closed:
                raise self._closed_error()
            for writer in self._loop_writers:
                if writer.loop is loop:
                    return writer
            if self._checkpointer is None:
                # checkpoints fsync at NORMAL: a thread of their own, not the loop's commits;
                # and the loop's batches never wait for the lock (they go to the writer thread)
                with self._wlock:
                    self._wconn.execute("PRAGMA wal_autocheckpoint = 0")
                    self._wconn.execute("PRAGMA busy_timeout = 0")
                    self._wconn_busy_ms = 0
                self._checkpointer = Checkpointer(self._connect)
            writer = LoopWriter(loop, self._commit_on_loop)
            self._loop_writers = [w for w in self._loop_writers if not w.loop.is_closed()]
            self._loop_writers.append(writer)
            return writer

    def _commit_on_loop(self, batch: list[Job]) -> None:
        """One loop pass's writes, committed here; handed to the writer thread instead when
        that would mean waiting: for the write lock (another process holds it), or behind
        writes the thread already has (they were submitted first)."""
        if self._closed:
            closed = self._closed_error()
            for _call, sink in batch:
                sink.set_exception(closed)
            return
        writer = self._writer
        try:
            if (writer is None or writer.idle()) and self._run_batch(batch, wait=False):
                return
            thread_writer = self._thread_writer()
        except BaseException as exc:  # as in the writer thread: every job hears of it
            if not isinstance(exc, StorageError):
                log.exception("commit on the loop failed")
            failure = exc if isinstance(exc, StorageError) else \
                StorageError(f"the grouped writer failed: {exc}")
            for _call, sink in batch:
                if not sink.done():
                    sink.set_exception(failure)
            return
        for call, sink in batch:
            thread_writer.submit(call, AlreadyRunning(sink))

    def _write(self, job: Callable[[sqlite3.Connection, _Txn], T]) -> T:
        txn: _Txn | None = getattr(self._local, "txn", None)
        if txn is not None:  # already inside a transaction (a grouped batch)
            return job(self._wconn, txn)
        if self._closed:
            raise self._closed_error()
        writer = self._writer
        if writer is not None and threading.current_thread() is not writer._thread:
            future: Future[T] = self.submit(self._write, job)
            return future.result()
        with self._wlock:
            result = self._run_batch_inline(job)
        return result

    def _run_batch_inline(self, job: Callable[[sqlite3.Connection, _Txn], T]) -> T:
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        self._run_batch([(partial(self._write, job), future)])
        return future.result()

    def _run_batch(self, batch: list[tuple[Callable[[], Any], JobSink]], *,
                   wait: bool = True) -> bool:
        """One transaction for the batch; futures resolved after COMMIT, in order, so a later
        write is never reported durable before an earlier one. With ``wait`` False nothing is
        run (False is returned) when the write lock is taken, by this process or another.

        Jobs first run back to back (cheap: no per-job statements). If one raises, the
        transaction is rolled back and the batch runs again with each job in a SAVEPOINT, so
        the failing job rolls back alone. Jobs are functions of their arguments and the
        database, so running one twice is safe."""
        if not self._wlock.acquire(blocking=wait):
            return False
        try:
            outcomes = self._attempt_batch(batch, isolated=False, wait=wait)
            if outcomes is None:
                outcomes = self._attempt_batch(batch, isolated=True, wait=wait)
        except _Locked:
            return False
        finally:
            self._wlock.release()
        if outcomes is None:  # pragma: no cover - the isolated pass always decides
            return True
        if self._checkpointer is not None:
            self._checkpointer.committed()
        for (_call, future), (ok, value, _entries) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self._listeners:
            self._announce([entry for ok, _v, entries in outcomes if ok for entry in entries])
        return True

    def _announce(self, entries: list[tuple[int, float, str, str | None, int,
                                            dict[str, Any]]]) -> None:
        """Hand the committed audit entries to the listeners that want them now (asked after
        the commit: one that starts wanting them later reads the committed state itself)."""
        listeners = [listener for listener, wanted in list(self._listeners)
                     if wanted is None or wanted()]
        if not entries or not listeners:
            return
        stamps: dict[float, Any] = {}
        announced: list[AuditEntry] = []
        for seq, at, kind, execution_id, attempt, data in entries:
            stamp = stamps.get(at)
            if stamp is None:
                stamp = stamps[at] = to_datetime(at)
            announced.append(AuditEntry(seq=seq, at=stamp, kind=kind,  # type: ignore[arg-type]
                                        execution_id=execution_id, attempt=attempt, data=data))
        for listener in listeners:
            try:
                listener(announced)
            except Exception:  # a listener never breaks a write
                log.exception("commit listener failed")

    def _begin(self, *, wait: bool) -> None:
        """BEGIN IMMEDIATE, waiting for the write lock up to busy_timeout or not at all. The
        connection keeps the busy time-out its usual caller wants (none once an event loop
        commits on it: a batch per loop pass) and changes it around the other kind of BEGIN."""
        conn = self._wconn
        wanted = self.busy_timeout_ms if wait else 0
        if wanted == self._wconn_busy_ms:
            conn.execute("BEGIN IMMEDIATE")
            return
        conn.execute(f"PRAGMA busy_timeout = {wanted}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._wconn_busy_ms}")

    def _attempt_batch(
        self, batch: list[tuple[Callable[[], Any], JobSink]], *, isolated: bool,
        wait: bool = True,
    ) -> list[tuple[bool, Any, list[Any]]] | None:
        """Run the batch in one transaction. Returns the outcomes once committed (a failed
        BEGIN or COMMIT fails every job); None when a job failed in the non-isolated pass.
        Raises ``_Locked`` when ``wait`` is False and the write lock is another connection's
        (nothing was run)."""
        conn = self._wconn
        outcomes: list[tuple[bool, Any, list[Any]]] = []
        single = len(batch) == 1
        try:
            self._begin(wait=wait)
        except sqlite3.Error as exc:
            if not wait and isinstance(exc, sqlite3.OperationalError) and \
                    ("locked" in str(exc) or "busy" in str(exc)):
                raise _Locked() from exc
            error = self._storage_error(exc)
            return [(False, error, []) for _ in batch]
        try:
            together: dict[int, tuple[int, _Txn]] = {}
            if not isolated and not single:
                try:
                    together = self._record_steps_together(conn, batch)
                except sqlite3.Error:
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK")
                    return None  # the isolated pass records each step alone
            done: list[_Txn] = []  # jobs whose audit rows are still to be written
            for index, (call, _sink) in enumerate(batch):
                recorded = together.get(index)
                if recorded is not None:
                    seq, txn = recorded
                    done.append(txn)
                    outcomes.append((True, seq, txn.entries))
                    continue
                txn = _Txn()
                self._local.txn = txn
                if isolated:
                    conn.execute("SAVEPOINT job")
                try:
                    value = call()
                    if isolated:  # its rows roll back with it should a later statement fail
                        self._flush_audit(conn, [txn])
                    else:  # all jobs' rows in one statement at the end of the batch
                        done.append(txn)
                except BaseException as exc:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back itself (a full disk, an I/O
                        # error): every job of the batch failed, with this error, not with the
                        # "no transaction is active" of a ROLLBACK issued after it
                        raise
                    if not isolated and not single:
                        conn.execute("ROLLBACK")
                        return None
                    if isolated:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    outcomes.append((False, self._wrap(exc), []))
                else:
                    if isolated:
                        conn.execute("RELEASE job")
                    outcomes.append((True, value, txn.entries))
                finally:
                    self._local.txn = None
            if single and not outcomes[0][0]:
                conn.execute("ROLLBACK")
            else:
                try:
                    self._flush_audit(conn, done)
                except Exception:
                    if single or not conn.in_transaction:
                        raise  # below: every job of the batch failed with it
                    conn.execute("ROLLBACK")
                    return None  # the isolated pass finds whose rows could not be written
                conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = self._wrap(exc)
            return [(False, failure, []) for _ in batch]
        return outcomes

    def _record_steps_together(self, conn: sqlite3.Connection,
                               batch: list[tuple[Callable[[], Any], JobSink]],
                               ) -> dict[int, tuple[int, _Txn]]:
        """The batch's ``record_step`` jobs of distinct executions (two or more) as one UPDATE
        of their step counters and one ``executemany`` of their rows, not two statements each
        (a loop batch holds a dozen: each statement is a ``sqlite3`` call, and each call hands
        the GIL to whatever thread waits for it). A job whose lease check fails here is left
        to run alone, raising its own error; two steps of one execution run alone too, in
        order. Returns batch index -> (seq, the job's transaction record)."""
        picked: dict[str, tuple[int, dict[str, Any]]] = {}
        twice: set[str] = set()
        record_step = self.record_step  # one bound method, not one per job
        for index, (call, _sink) in enumerate(batch):
            if type(call) is partial and not call.args and call.func == record_step:
                execution_id = call.keywords["execution_id"]
                if execution_id in picked:
                    twice.add(execution_id)
                else:
                    picked[execution_id] = (index, call.keywords)
        for execution_id in twice:
            del picked[execution_id]
        if len(picked) < 2:
            return {}
        keys: list[Any] = []
        for execution_id, (_index, kw) in picked.items():
            keys += (execution_id, kw["worker_id"], kw["now"])
        seqs = dict(conn.execute(
            "WITH v(id, worker, now) AS (VALUES " + ",".join(["(?,?,?)"] * len(picked)) + ")"
            " UPDATE executions SET step_seq = step_seq + 1, updated_at = v.now FROM v"
            " WHERE executions.execution_id = v.id AND executions.lease_owner = v.worker"
            " AND executions.status = 'running'"
            " RETURNING executions.execution_id, executions.step_seq", keys).fetchall())
        rows: list[tuple[Any, ...]] = []
        recorded: dict[int, tuple[int, _Txn]] = {}
        for execution_id, (index, kw) in picked.items():
            seq = seqs.get(execution_id)
            if seq is None:
                continue  # not ours (any more): the job runs alone and says why
            rows.append((execution_id, kw["step_id"], kw["kind"], seq, kw["result_json"],
                         _error_json(kw["error"]), kw["attempt"], kw["started_at"],
                         kw["completed_at"]))
            txn = _Txn()
            for audit_kind, data in kw.get("audit_entries", ()):
                self._add_audit(conn, txn, kind=audit_kind, execution_id=execution_id,
                                attempt=kw["attempt"], data=data, now=kw["now"],
                                audit=kw.get("audit", True))
            recorded[index] = (int(seq), txn)
        if rows:
            conn.executemany(_STEP_UPSERT, rows)
        return recorded

    def _wrap(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            return self._storage_error(exc)
        return exc

    def _storage_error(self, exc: BaseException) -> StorageError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StorageError(f"{self.path} is locked by another process: {text}")
        if "full" in text:
            return StorageError(f"the disk holding {self.path} is full: {text}")
        if "readonly" in text or "read-only" in text:
            return StorageError(f"{self.path} is read-only: {text}")
        if "malformed" in text or "not a database" in text:
            return StorageError(f"{self.path} is corrupt: {text}")
        return StorageError(f"storage error on {self.path}: {text}")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc

    def data_version(self) -> int:
        """Changes whenever any other connection commits: the cheap "anything new?" check."""
        return int(self._read("PRAGMA data_version")[0][0])

    @staticmethod
    def _add_audit(conn: sqlite3.Connection, txn: _Txn, *, kind: str, execution_id: str | None,
                   attempt: int, data: dict[str, Any], now: float, audit: bool) -> None:
        txn.pending.append((now, kind, execution_id, attempt, data, audit))

    @staticmethod
    def _flush_audit(conn: sqlite3.Connection, txns: list[_Txn]) -> None:
        """Write the jobs' audit entries, in job order, in one statement; their seqs are
        consecutive (one writer, AUTOINCREMENT) so the last rowid tells every one of them.
        Each job's announced entries (``txn.entries``) get their seqs here."""
        pending = [entry for txn in txns for entry in txn.pending]
        rows = [(at, kind, eid, attempt, _compact_json(data))
                for at, kind, eid, attempt, data, persist in pending if persist]
        next_seq = 0
        if rows:
            if len(rows) == 1:
                cur = conn.execute(
                    "INSERT INTO audit (at, kind, execution_id, attempt, data)"
                    " VALUES (?,?,?,?,?)", rows[0])
                last = int(cur.lastrowid or 0)
            else:
                conn.executemany(
                    "INSERT INTO audit (at, kind, execution_id, attempt, data)"
                    " VALUES (?,?,?,?,?)", rows)
                last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            next_seq = last - len(rows) + 1
        for txn in txns:
            pending, txn.pending = txn.pending, []
            for at, kind, eid, attempt, data, persist in pending:
                seq = 0
                if persist:
                    seq, next_seq = next_seq, next_seq + 1
                txn.entries.append((seq, at, kind, eid, attempt, data))

    def _status_change(self, conn: sqlite3.Connection, txn: _Txn, *, execution_id: str,
                       attempt: int, old: str | None, new: str, reason: str | None, now: float,
                       audit: bool) -> None:
        if old == new:
            return
        self._add_audit(conn, txn, kind="execution_status_changed", execution_id=execution_id,
                        attempt=attempt, data={"from": old, "to": new, "reason": reason},
                        now=now, audit=audit)

    # executions ------------------------------------------------------------------------------
    def create_execution(
        self, *, execution_id: str, workflow_id: str, input_json: str | None,
        max_attempts: int, retry_backoff: float, now: float, deadline: float | None = None,
        idempotency_key: str | None = None, audit: bool = True,
    ) -> tuple[str, bool]:
        def job(conn: sqlite3.Connection, txn: _Txn) -> tuple[str, bool]:
            found, created, _none = self._insert_execution(
                conn, txn, execution_id=execution_id, workflow_id=workflow_id,
                input_json=input_json, max_attempts=max_attempts, retry_backoff=retry_backoff,
                now=now, deadline=deadline, idempotency_key=idempotency_key, audit=audit)
            return found, created

        return self._write(job)

    def create_and_claim(
        self, *, execution_id: str, workflow_id: str, input_json: str | None,
        max_attempts: int, retry_backoff: float, now: float, worker_id: str,
        lease_until: float, deadline: float | None = None, idempotency_key: str | None = None,
        audit: bool = True,
    ) -> tuple[str, bool, Claim | None]:
        """``create_execution``, and a new execution claimed by ``worker_id`` in the same
        statement: it is stored as running under that lease, with both status changes in its
        audit trail as if it had been created and then claimed. Returns (id, created, claim);
        an idempotency key that finds an existing execution claims nothing."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> tuple[str, bool, Claim | None]:
            return self._insert_execution(
                conn, txn, execution_id=execution_id, workflow_id=workflow_id,
                input_json=input_json, max_attempts=max_attempts, retry_backoff=retry_backoff,
                now=now, deadline=deadline, idempotency_key=idempotency_key, audit=audit,
                lease=(worker_id, lease_until))

        return self._write(job)

    def _insert_execution(
        self, conn: sqlite3.Connection, txn: _Txn, *, execution_id: str, workflow_id: str,
        input_json: str | None, max_attempts: int, retry_backoff: float, now: float,
        deadline: float | None, idempotency_key: str | None, audit: bool,
        lease: tuple[str, float] | None = None,
    ) -> tuple[str, bool, Claim | None]:
        """(id, created, claim): created is False when an idempotency key found an existing
        execution; the claim is there when ``lease`` (worker, lease end) was given and the
        execution is new."""
        if idempotency_key is not None:
            row = conn.execute(
                "SELECT execution_id FROM executions"
                " WHERE workflow_id = ? AND idempotency_key = ?",
                (workflow_id, idempotency_key),
            ).fetchone()
            if row is not None:
                return row[0], False, None
        owner, lease_until = lease if lease is not None else (None, None)
        conn.execute(
            "INSERT INTO executions (execution_id, workflow_id, status, attempt,"
            " max_attempts, retry_backoff, input, created_at, updated_at, deadline,"
            " idempotency_key, lease_owner, lease_until) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?)",
            (execution_id, workflow_id, "pending" if owner is None else "running",
             max_attempts, retry_backoff, input_json, now, now, deadline, idempotency_key,
             owner, lease_until),
        )
        if deadline is not None:
            conn.execute(
                "INSERT INTO timers (kind, execution_id, step_id, due_at, created_at)"
                " VALUES ('timeout', ?, '', ?, ?)", (execution_id, deadline, now))
        self._status_change(conn, txn, execution_id=execution_id, attempt=1, old=None,
                            new="pending", reason="created", now=now, audit=audit)
        if owner is None:
            return execution_id, True, None
        self._status_change(conn, txn, execution_id=execution_id, attempt=1, old="pending",
                            new="running", reason="claimed", now=now, audit=audit)
        row = (execution_id, workflow_id, "running", None, 1, max_attempts, input_json, None,
               None, now, now, deadline, idempotency_key, None, None, owner, 0)
        return execution_id, True, Claim(
            execution=_execution(row, claimed_by=owner, attempt=1), wakeups=0,
            has_history=False, step_seq=0)

    def execution_version(self, execution_id: str) -> str | None:
        """A token that changes whenever what ``show`` prints of the execution may have
        changed (its row, its step counter, its audit trail): one row and one index seek,
        for a dashboard page that asks every few seconds whether to fetch it all again.
        None for an unknown execution."""
        rows = self._read(
            "SELECT updated_at, status, attempt, step_seq, wakeups, (SELECT max(seq) FROM audit"
            " WHERE audit.execution_id = executions.execution_id)"
            " FROM executions WHERE execution_id = ?", (execution_id,))
        return None if not rows else ":".join(map(repr, rows[0]))

    def get_execution(self, execution_id: str) -> Execution | None:
        rows = self._read(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?",
            (execution_id,),
        )
        return _execution(rows[0]) if rows else None

    def list_executions(
        self, *, status: str | Sequence[str] | None = None, workflow: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[Execution]:
        statuses = [] if not status else [status] if isinstance(status, str) else list(status)
        if workflow and not statuses:
            # one workflow's newest: merged from its per-status runs of the workflow index
            statuses = [*ACTIVE_STATUSES, *FINISHED_STATUSES]
        if len(set(statuses)) > 1:
            return self._list_merged(sorted(set(map(str, statuses))), workflow, limit, offset)
        where: list[str] = []
        params: list[Any] = []
        if statuses:
            where.append("status = ?")
            params.append(str(statuses[0]))
        if workflow:
            where.append("workflow_id = ?")
            params.append(workflow)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions {clause}"
            " ORDER BY created_at DESC, execution_id DESC LIMIT ? OFFSET ?",
            [*params, int(limit), int(offset)],
        )
        return [_execution(row) for row in rows]

    def _list_merged(self, statuses: list[str], workflow: str | None, limit: int,
                     offset: int) -> list[Execution]:
        """Several statuses (``--status finished``, or every status of one workflow): the
        newest ``offset + limit`` of each status in index order, merged. ``status IN (...)``
        would sort every matching row first: seconds with a million executions."""
        branch = (f"SELECT * FROM (SELECT {_EXECUTION_COLUMNS} FROM executions"
                  " WHERE status = ?" + (" AND workflow_id = ?" if workflow else "") +
                  " ORDER BY created_at DESC, execution_id DESC LIMIT ?)")
        params: list[Any] = []
        for one in statuses:
            params.extend([one, workflow] if workflow else [one])
            params.append(int(limit) + int(offset))
        rows = self._read(
            " UNION ALL ".join([branch] * len(statuses)) +
            " ORDER BY created_at DESC, execution_id DESC LIMIT ? OFFSET ?",
            [*params, int(limit), int(offset)],
        )
        return [_execution(row) for row in rows]

    def count_executions(self) -> dict[str, int]:
        rows = self._read("SELECT status, count(*) FROM executions GROUP BY status")
        return {status: count for status, count in rows}

    def ended_among(self, execution_ids: Sequence[str]) -> set[str]:
        """Which of these executions are no longer active (finished, or gone): one indexed
        read per 500 ids, for a service's waiters to learn what other processes finished."""
        ids = list(dict.fromkeys(execution_ids))
        active: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            # by id alone, the status checked here: with "AND status IN (active ones)" the
            # planner walked the status index instead, every active execution (55 ms with
            # 100,000 parked, once a second from the kept-run check)
            rows = self._read(
                f"SELECT execution_id, status FROM executions WHERE execution_id IN"
                f" ({','.join('?' * len(chunk))})", chunk)
            active.update(eid for eid, status in rows if status in ACTIVE_STATUSES)
        return set(ids) - active

    def count_in_flight(self) -> dict[str, int]:
        marks = ",".join("?" * len(ACTIVE_STATUSES))
        rows = self._read(
            f"SELECT workflow_id, count(*) FROM executions WHERE status IN ({marks})"
            " GROUP BY workflow_id ORDER BY workflow_id", ACTIVE_STATUSES)
        return {workflow_id: count for workflow_id, count in rows}

    def list_step_results(self, execution_id: str) -> list[StepRecord]:
        rows = self._read(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        )
        return [_step(row) for row in rows]

    def list_audit_entries(
        self, execution_id: str, *, limit: int | None = None, offset: int = 0
    ) -> list[AuditEntry]:
        rows = self._read(
            "SELECT seq, at, kind, execution_id, attempt, data FROM audit"
            " WHERE execution_id = ? ORDER BY seq LIMIT ? OFFSET ?",
            (execution_id, -1 if limit is None else int(limit), int(offset)),
        )
        return [_audit(row) for row in rows]

    def load_history(self, execution_id: str, *, after_seq: int = 0) -> History:
        """Steps (only those recorded after ``after_seq``, for a cached history), pending
        timers, and the total step count so a cache can tell it missed a change: one query."""
        history = History()
        try:
            rows = self._reader().execute(
                f"SELECT 0, {_STEP_COLUMNS} FROM steps WHERE execution_id = ?1 AND seq > ?2"
                " UNION ALL SELECT 1, kind, step_id, due_at, NULL, NULL, NULL, NULL, NULL"
                " FROM timers WHERE execution_id = ?1 AND state = 'pending'"
                " UNION ALL SELECT 2, count(*), coalesce(max(seq), 0), NULL, NULL, NULL, NULL,"
                " NULL, NULL FROM steps WHERE execution_id = ?1",
                (execution_id, after_seq),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc
        for row in rows:
            if row[0] == 0:
                record = _step(row[1:])
                history.steps[record.step_id] = record
            elif row[0] == 1:
                history.timers[(row[1], row[2])] = row[3]
            else:
                history.step_count = int(row[1])
                history.max_seq = int(row[2])
        return history

    # running ---------------------------------------------------------------------------------
    def _claim_many(self, conn: sqlite3.Connection, txn: _Txn,
                    found: list[tuple[Sequence[Any], int, int, bool]], *, worker_id: str,
                    now: float, lease_until: float, reason: str, audit: bool) -> list[Claim]:
        """Take the lease of executions already checked to be claimable, in one statement.
        ``found``: (row read with ``_EXECUTION_COLUMNS``, attempt, wakeups, has_history)."""
        conn.executemany(
            "UPDATE executions SET status = 'running', status_reason = NULL,"
            " lease_owner = ?, lease_until = ?, updated_at = ? WHERE execution_id = ?",
            [(worker_id, lease_until, now, row[0]) for row, _a, _w, _h in found],
        )
        claims: list[Claim] = []
        for row, attempt, wakeups, has_history in found:
            self._status_change(conn, txn, execution_id=row[0], attempt=attempt, old=row[2],
                                new="running", reason=reason, now=now, audit=audit)
            claims.append(Claim(execution=_execution(row, claimed_by=worker_id,
                                                     attempt=attempt),
                                wakeups=wakeups, has_history=has_history))
        return claims

    def _claim_rows(self, conn: sqlite3.Connection, txn: _Txn, rows: list[Any], *,
                    worker_id: str, now: float, lease_until: float, reason: str,
                    audit: bool) -> list[Claim]:
        """Claim rows read with ``_CLAIM_COLUMNS``."""
        claims = self._claim_many(
            conn, txn, [(row, row[4], int(row[16]), bool(row[17] or row[18])) for row in rows],
            worker_id=worker_id, now=now, lease_until=lease_until, reason=reason, audit=audit)
        return [replace(claim, step_seq=int(row[17])) for claim, row in zip(claims, rows,
                                                                            strict=True)]

    def claim_ready(
        self, *, worker_id: str, workflow_ids: Sequence[str], now: float, real_now: float,
        lease_until: float, limit: int, audit: bool = True,
    ) -> list[Claim]:
        if limit <= 0 or not workflow_ids:
            return []

        def job(conn: sqlite3.Connection, txn: _Txn) -> list[Claim]:
            marks = ",".join("?" * len(workflow_ids))
            rows = conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM executions"
                " WHERE status IN ('pending', 'running')"
                " AND (lease_owner IS NULL OR lease_until < ?)"
                f" AND workflow_id IN ({marks}) ORDER BY created_at LIMIT ?",
                (real_now, *workflow_ids, limit),
            ).fetchall()
            return self._claim_rows(conn, txn, rows, worker_id=worker_id, now=now,
                                    lease_until=lease_until, reason="claimed", audit=audit)

        return self._write(job)

    def claim_execution(
        self, execution_id: str, *, worker_id: str, workflow_ids: Sequence[str], now: float,
        real_now: float, lease_until: float, audit: bool = True,
    ) -> Claim | None:
        def job(conn: sqlite3.Connection, txn: _Txn) -> Claim | None:
            marks = ",".join("?" * len(workflow_ids))
            rows = conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM executions WHERE execution_id = ?"
                " AND status IN ('pending', 'running')"
                " AND (lease_owner IS NULL OR lease_until < ?)"
                f" AND workflow_id IN ({marks})",
                (execution_id, real_now, *workflow_ids),
            ).fetchall()
            claims = self._claim_rows(conn, txn, rows, worker_id=worker_id, now=now,
                                      lease_until=lease_until, reason="claimed", audit=audit)
            return claims[0] if claims else None

        if not workflow_ids:
            return None
        return self._write(job)

    def _check_lease(self, conn: sqlite3.Connection, execution_id: str, worker_id: str,
                     now: float) -> int:
        """Bump the execution's step counter if this worker still runs it; else say why not."""
        row = conn.execute(
            "UPDATE executions SET step_seq = step_seq + 1, updated_at = ?"
            " WHERE execution_id = ? AND lease_owner = ? AND status = 'running'"
            " RETURNING step_seq",
            (now, execution_id, worker_id),
        ).fetchone()
        if row is not None:
            return int(row[0])
        raise self._why_not_ours(conn, execution_id, worker_id)

    def _why_not_ours(self, conn: sqlite3.Connection, execution_id: str,
                      worker_id: str) -> DurableError:
        found = conn.execute(
            "SELECT status, error, status_reason FROM executions WHERE execution_id = ?",
            (execution_id,),
        ).fetchone()
        if found is None:
            return ExecutionNotFound(execution_id)
        status, error, reason = found
        if status == "cancelled":
            return ExecutionCancelled(execution_id, reason)
        if status in ("failed", "compensation_failed"):
            info = ErrorInfo.from_json(None if error is None else json.loads(error))
            return ExecutionFailed(execution_id, info, status)
        return LeaseLost(execution_id, worker_id)

    def record_step(
        self, *, execution_id: str, worker_id: str, step_id: str, kind: str,
        result_json: str | None, error: ErrorInfo | None, attempt: int,
        started_at: float | None, completed_at: float, now: float,
        audit_entries: Sequence[tuple[str, dict[str, Any]]] = (), audit: bool = True,
    ) -> int:
        def job(conn: sqlite3.Connection, txn: _Txn) -> int:
            seq = self._check_lease(conn, execution_id, worker_id, now)
            conn.execute(_STEP_UPSERT, (execution_id, step_id, kind, seq, result_json,
                                        _error_json(error), attempt, started_at, completed_at))
            for audit_kind, data in audit_entries:
                self._add_audit(conn, txn, kind=audit_kind, execution_id=execution_id,
                                attempt=attempt, data=data, now=now, audit=audit)
            return seq

        return self._write(job)

    def consume_signal(
        self, *, execution_id: str, worker_id: str, signal_id: str, step_id: str,
        attempt: int, now: float, audit: bool = True,
    ) -> StepRecord | None:
        """Take the oldest buffered signal for this wait, unless its time-out won the race."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> StepRecord | None:
            existing = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE execution_id = ? AND step_id = ?",
                (execution_id, step_id),
            ).fetchone()
            if existing is not None and existing[1] == "signal":
                return _step(existing)  # the time-out fired after history was loaded
            row = conn.execute(
                # the planner prefers the primary key (same columns), which walks every
                # signal of this id ever consumed: a signal loop would get slower per round
                "SELECT seq, payload FROM signals INDEXED BY signals_unconsumed"
                " WHERE execution_id = ? AND signal_id = ?"
                " AND consumed_by IS NULL ORDER BY seq LIMIT 1",
                (execution_id, signal_id),
            ).fetchone()
            if row is None:
                return None
            seq, payload = row
            step_seq = self._check_lease(conn, execution_id, worker_id, now)
            conn.execute(
                "UPDATE signals SET consumed_by = ?, consumed_at = ?"
                " WHERE execution_id = ? AND signal_id = ? AND seq = ?",
                (step_id, now, execution_id, signal_id, seq),
            )
            result = '{"kind":"signal","payload":' + (payload or "null") + "}"
            started = conn.execute(
                "SELECT created_at FROM timers WHERE execution_id = ? AND kind = 'signal'"
                " AND step_id = ?", (execution_id, step_id),
            ).fetchone()
            started_at = now if started is None else started[0]
            conn.execute(
                "INSERT INTO steps (execution_id, step_id, kind, seq, result, error, attempt,"
                " started_at, completed_at) VALUES (?, ?, 'signal', ?, ?, NULL, ?, ?, ?)"
                " ON CONFLICT (execution_id, step_id) DO UPDATE SET kind = excluded.kind,"
                " seq = excluded.seq, result = excluded.result, error = NULL,"
                " attempt = excluded.attempt, started_at = excluded.started_at,"
                " completed_at = excluded.completed_at",
                (execution_id, step_id, step_seq, result, attempt, started_at, now),
            )
            conn.execute(
                "UPDATE timers SET state = 'cancelled' WHERE execution_id = ? AND kind = 'signal'"
                " AND step_id = ? AND state = 'pending'", (execution_id, step_id),
            )
            self._add_audit(conn, txn, kind="signal_delivered", execution_id=execution_id,
                            attempt=attempt,
                            data={"step_id": step_id, "signal": signal_id, "seq": seq},
                            now=now, audit=audit)
            return StepRecord(step_id=step_id, kind="signal", result=json.loads(result),
                              error=None, started_at=to_datetime(started_at),
                              completed_at=to_datetime(now),
                              duration_ms=round((now - started_at) * 1000.0, 3),
                              attempt=attempt, seq=step_seq)

        return self._write(job)

    def park(
        self, *, execution_id: str, worker_id: str, status: str, wakeups_seen: int,
        timers: Sequence[NewTimer], attempt: int, now: float, audit: bool = True,
    ) -> str:
        """Record what the execution waits for and let it go. If something woke it while it
        ran (a signal arrived, a timer fired), it goes back to ``pending`` instead."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> str:
            row = conn.execute(
                "SELECT status, wakeups, lease_owner FROM executions WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
            if row is None or row[0] != "running" or row[2] != worker_id:
                raise self._why_not_ours(conn, execution_id, worker_id)
            for timer in timers:
                # A pending timer stands (a re-run keeps the first due time), and so does one
                # whose step is stored (it fired while this run went on, from stale history).
                # Any other belongs to a wait that ended without a step (a failed attempt
                # cancelled it): this new wait arms it afresh.
                cur = conn.execute(
                    "INSERT INTO timers (kind, execution_id, step_id, signal_id,"
                    " due_at, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (execution_id, kind, step_id) DO UPDATE SET"
                    " signal_id = excluded.signal_id, due_at = excluded.due_at,"
                    " created_at = excluded.created_at, state = 'pending'"
                    " WHERE timers.state != 'pending' AND NOT EXISTS (SELECT 1 FROM steps"
                    " WHERE steps.execution_id = timers.execution_id"
                    " AND steps.step_id = timers.step_id)",
                    (timer.kind, execution_id, timer.step_id, timer.signal_id, timer.due_at,
                     now),
                )
                if cur.rowcount != 1:
                    continue
                if timer.kind == "sleep":
                    data: dict[str, Any] = {"step_id": timer.step_id,
                                            "due_at": _iso(timer.due_at)}
                    self._add_audit(conn, txn, kind="sleep_scheduled",
                                    execution_id=execution_id, attempt=attempt, data=data,
                                    now=now, audit=audit)
                else:
                    data = {"step_id": timer.step_id, "signal": timer.signal_id,
                            "timeout_at": _iso(timer.due_at)}
                    self._add_audit(conn, txn, kind="signal_waiting",
                                    execution_id=execution_id, attempt=attempt, data=data,
                                    now=now, audit=audit)
            woken = int(row[1]) != wakeups_seen
            if not woken and any(t.kind == "signal" for t in timers):
                # a signal that arrived before this run looked for it is still buffered
                for timer in timers:
                    if timer.kind == "signal" and conn.execute(
                        "SELECT 1 FROM signals INDEXED BY signals_unconsumed"
                        " WHERE execution_id = ? AND signal_id = ?"
                        " AND consumed_by IS NULL LIMIT 1", (execution_id, timer.signal_id),
                    ).fetchone():
                        woken = True
                        break
            new_status = "pending" if woken else status
            conn.execute(
                "UPDATE executions SET status = ?, status_reason = NULL, lease_owner = NULL,"
                " lease_until = NULL, updated_at = ? WHERE execution_id = ?",
                (new_status, now, execution_id),
            )
            reason = "woken while running" if woken else f"parked: {status}"
            self._status_change(conn, txn, execution_id=execution_id, attempt=attempt,
                                old="running", new=new_status, reason=reason, now=now,
                                audit=audit)
            return new_status

        return self._write(job)

    def finish(
        self, *, execution_id: str, worker_id: str, status: str, result_json: str | None,
        error: ErrorInfo | None, reason: str | None, now: float, audit: bool = True,
    ) -> bool:
        def job(conn: sqlite3.Connection, txn: _Txn) -> bool:
            row = conn.execute(
                "UPDATE executions SET status = ?, status_reason = ?, result = ?, error = ?,"
                " lease_owner = NULL, lease_until = NULL, updated_at = ?"
                " WHERE execution_id = ? AND lease_owner = ? AND status = 'running'"
                " RETURNING attempt",
                (status, reason, result_json, _error_json(error), now, execution_id,
                 worker_id),
            ).fetchone()
            if row is None:
                raise self._why_not_ours(conn, execution_id, worker_id)
            conn.execute(
                "UPDATE timers SET state = 'cancelled' WHERE execution_id = ?"
                " AND state = 'pending'", (execution_id,),
            )
            self._status_change(conn, txn, execution_id=execution_id, attempt=int(row[0]),
                                old="running", new=status, reason=reason, now=now, audit=audit)
            return True

        return self._write(job)

    def schedule_retry(
        self, *, execution_id: str, worker_id: str, error: ErrorInfo, due_at: float,
        now: float, audit: bool = True,
    ) -> bool:
        def job(conn: sqlite3.Connection, txn: _Txn) -> bool:
            row = conn.execute(
                "UPDATE executions SET status = 'retrying', status_reason = ?, error = ?,"
                " lease_owner = NULL, lease_until = NULL, updated_at = ?"
                " WHERE execution_id = ? AND lease_owner = ? AND status = 'running'"
                " RETURNING attempt",
                (f"attempt failed: {error.type}", _error_json(error), now, execution_id,
                 worker_id),
            ).fetchone()
            if row is None:
                raise self._why_not_ours(conn, execution_id, worker_id)
            attempt = int(row[0])
            conn.execute(
                "UPDATE timers SET state = 'cancelled' WHERE execution_id = ?"
                " AND state = 'pending' AND kind IN ('sleep', 'signal')", (execution_id,),
            )
            conn.execute(
                "INSERT OR REPLACE INTO timers (kind, execution_id, step_id, due_at, created_at)"
                " VALUES ('retry', ?, ?, ?, ?)", (execution_id, str(attempt), due_at, now),
            )
            self._status_change(conn, txn, execution_id=execution_id, attempt=attempt,
                                old="running", new="retrying",
                                reason=f"attempt {attempt} failed: {error.type}: "
                                       f"{error.message}"[:500],
                                now=now, audit=audit)
            return True

        return self._write(job)

    def release(self, execution_id: str, *, worker_id: str,
                status_reason: str | None = None) -> None:
        def job(conn: sqlite3.Connection, txn: _Txn) -> None:
            conn.execute(
                "UPDATE executions SET lease_owner = NULL, lease_until = NULL,"
                " status_reason = COALESCE(?, status_reason)"
                " WHERE execution_id = ? AND lease_owner = ?",
                (status_reason, execution_id, worker_id),
            )

        self._write(job)

    def fire_due_timers(
        self, *, worker_id: str, workflow_ids: Sequence[str], now: float, real_now: float,
        lease_until: float, limit: int, audit: bool = True,
    ) -> list[Claim]:
        """Fire due execution timers (the UPDATE that marks them fired is the claim, so only
        one worker acts on each) and claim the executions they wake that this worker runs.

        Set-based where it can be: one statement fires the timers, one reads their
        executions, and the step rows and counters are written with executemany."""
        loaded = set(workflow_ids)

        def job(conn: sqlite3.Connection, txn: _Txn) -> list[Claim]:
            due = conn.execute(
                "UPDATE timers SET state = 'fired' WHERE timer_id IN ("
                " SELECT timer_id FROM timers WHERE state = 'pending' AND due_at IS NOT NULL"
                " AND due_at <= ? AND execution_id IS NOT NULL ORDER BY due_at LIMIT ?)"
                " RETURNING due_at, timer_id, kind, execution_id, step_id, signal_id, created_at",
                (now, limit),
            ).fetchall()
            if not due:
                return []
            due.sort()  # RETURNING has no order: oldest due first
            due = [row[1:] for row in due]
            ids = list(dict.fromkeys(row[2] for row in due))
            marks = ",".join("?" * len(ids))
            rows = {row[0]: row for row in conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM executions WHERE execution_id IN ({marks})", ids)}
            existing = set(conn.execute(
                f"SELECT execution_id, step_id FROM steps WHERE execution_id IN ({marks})"
                " AND step_id IN (" + ",".join("?" * len(due)) + ")",
                [*ids, *(row[3] for row in due)],
            ).fetchall())
            # per execution: [status, attempt, step_seq, wakeups]
            state = {eid: [rows[eid][2], rows[eid][4], rows[eid][17], rows[eid][16]]
                     for eid in ids if eid in rows}
            new_steps: list[tuple[Any, ...]] = []
            fired: dict[str, list[StepRecord]] = {}
            for _timer_id, kind, execution_id, step_id, signal_id, created_at in due:
                current = state.get(execution_id)
                if current is None or current[0] not in ACTIVE_STATUSES:
                    continue
                status, attempt = current[0], current[1]
                if kind == "timeout":
                    self._time_out(conn, txn, execution_id, status, attempt, now, audit)
                    current[0] = "failed"
                    continue
                if kind in ("sleep", "signal") and (execution_id, step_id) not in existing:
                    existing.add((execution_id, step_id))
                    current[2] += 1
                    result = None if kind == "sleep" else '{"kind":"timeout"}'
                    new_steps.append((execution_id, step_id, kind, current[2], result, attempt,
                                      created_at, now))
                    fired.setdefault(execution_id, []).append(StepRecord(
                        step_id=step_id, kind=kind,
                        result=None if result is None else {"kind": "timeout"}, error=None,
                        started_at=to_datetime(created_at), completed_at=to_datetime(now),
                        duration_ms=round((now - created_at) * 1000.0, 3), attempt=attempt,
                        seq=current[2]))
                    audit_kind = "sleep_completed" if kind == "sleep" else "signal_timed_out"
                    data: dict[str, Any] = {"step_id": step_id}
                    if kind == "signal":
                        data["signal"] = signal_id
                    self._add_audit(conn, txn, kind=audit_kind, execution_id=execution_id,
                                    attempt=attempt, data=data, now=now, audit=audit)
                elif kind == "retry" and status == "retrying":
                    current[1] += 1
                current[3] += 1
            if new_steps:
                conn.executemany(
                    "INSERT INTO steps (execution_id, step_id, kind, seq, result, attempt,"
                    " started_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", new_steps)
            touched = [(s[1], s[2], s[3], eid) for eid, s in state.items()
                       if s[0] in ACTIVE_STATUSES]
            conn.executemany(
                "UPDATE executions SET attempt = ?, step_seq = ?, wakeups = ?"
                " WHERE execution_id = ?", touched)
            mine: list[tuple[Sequence[Any], int, int, bool]] = []
            for execution_id, current in state.items():
                row = rows[execution_id]
                if current[0] not in PARKED_STATUSES:
                    continue  # running elsewhere: its park sees the new wake-up count
                if row[1] in loaded:
                    mine.append((row, current[1], current[3], True))
                else:
                    conn.execute(
                        "UPDATE executions SET status = 'pending', updated_at = ?"
                        " WHERE execution_id = ?", (now, execution_id))
                    self._status_change(conn, txn, execution_id=execution_id,
                                        attempt=current[1], old=current[0], new="pending",
                                        reason="woken", now=now, audit=audit)
            claims = self._claim_many(conn, txn, mine, worker_id=worker_id, now=now,
                                      lease_until=lease_until, reason="woken", audit=audit)
            return [replace(claim, step_seq=state[claim.execution.execution_id][2],
                            fired=tuple(fired.get(claim.execution.execution_id, ())))
                    for claim in claims]

        return self._write(job)

    def _time_out(self, conn: sqlite3.Connection, txn: _Txn, execution_id: str, status: str,
                  attempt: int, now: float, audit: bool) -> None:
        error = ErrorInfo("TimeoutError", "the execution ran past its timeout")
        conn.execute(
            "UPDATE executions SET status = 'failed', status_reason = 'timeout', error = ?,"
            " updated_at = ? WHERE execution_id = ?",
            (_error_json(error), now, execution_id),
        )
        conn.execute(
            "UPDATE timers SET state = 'cancelled' WHERE execution_id = ? AND state = 'pending'",
            (execution_id,),
        )
        self._status_change(conn, txn, execution_id=execution_id, attempt=attempt, old=status,
                            new="failed", reason="timeout", now=now, audit=audit)

    def next_due_at(self) -> float | None:
        rows = self._read(
            "SELECT min(due_at) FROM timers WHERE state = 'pending' AND due_at IS NOT NULL"
        )
        return None if rows[0][0] is None else float(rows[0][0])

    def heartbeat(self, *, worker_id: str, real_now: float, lease_until: float) -> int:
        def job(conn: sqlite3.Connection, txn: _Txn) -> int:
            conn.execute("UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?",
                         (real_now, worker_id))
            cur = conn.execute(
                "UPDATE executions SET lease_until = ? WHERE lease_owner = ?",
                (lease_until, worker_id),
            )
            return int(cur.rowcount)

        return self._write(job)

    def mark_unloaded(self, *, workflow_ids: Sequence[str], reason_prefix: str) -> int:
        """Give queued executions of workflows no worker here runs a reason that says so."""

        loaded = set(workflow_ids)

        def job(conn: sqlite3.Connection, txn: _Txn) -> int:
            # Only the workflows not loaded are looked at, each through the workflow index:
            # scanning every queued execution instead held the write lock for 74 ms with
            # 100,000 queued, every second, however many of them were ours.
            marked = 0
            for (workflow_id,) in conn.execute(_WORKFLOW_IDS_IN_USE).fetchall():
                if workflow_id in loaded:
                    continue
                marked += conn.execute(
                    "UPDATE executions SET status_reason = ? || workflow_id"
                    " WHERE workflow_id = ? AND status IN ('pending', 'running')"
                    " AND lease_owner IS NULL"
                    " AND (status_reason IS NULL OR status_reason != ? || workflow_id)",
                    (reason_prefix, workflow_id, reason_prefix),
                ).rowcount
            return marked

        return self._write(job)

    # signals and cancellation ----------------------------------------------------------------
    def append_signal(
        self, *, execution_id: str, signal_id: str, payload_json: str | None, now: float,
    ) -> int:
        def job(conn: sqlite3.Connection, txn: _Txn) -> int:
            return self._append_signal(conn, txn, execution_id, signal_id, payload_json, now,
                                       None)[0]

        return self._write(job)

    def signal_and_claim(
        self, *, execution_id: str, signal_id: str, payload_json: str | None, now: float,
        worker_id: str, workflow_ids: Sequence[str], lease_until: float, audit: bool = True,
    ) -> tuple[int, Claim | None]:
        """``append_signal`` for a worker in the same process: when the signal wakes an
        execution this worker runs, it is claimed in the same transaction (one commit less
        on the way from the signal to the workflow)."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> tuple[int, Claim | None]:
            return self._append_signal(conn, txn, execution_id, signal_id, payload_json, now,
                                       (worker_id, set(workflow_ids), lease_until, audit))

        return self._write(job)

    def _append_signal(self, conn: sqlite3.Connection, txn: _Txn, execution_id: str,
                       signal_id: str, payload_json: str | None, now: float,
                       claim_for: tuple[str, set[str], float, bool] | None,
                       ) -> tuple[int, Claim | None]:
        row = conn.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?",
            (execution_id,),
        ).fetchone()
        if row is None:
            raise ExecutionNotFound(execution_id)
        status = row[2]
        if status not in ACTIVE_STATUSES:
            raise ExecutionNotActive(execution_id, "signal", status, ACTIVE_STATUSES)
        seq = int(conn.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM signals"
            " WHERE execution_id = ? AND signal_id = ?", (execution_id, signal_id),
        ).fetchone()[0])
        conn.execute(
            "INSERT INTO signals (execution_id, signal_id, seq, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?)", (execution_id, signal_id, seq, payload_json, now),
        )
        wakeups, step_seq = conn.execute(
            "UPDATE executions SET wakeups = wakeups + 1 WHERE execution_id = ?"
            " RETURNING wakeups, step_seq", (execution_id,),
        ).fetchone()
        if status != "waiting" or not conn.execute(
            "SELECT 1 FROM timers WHERE execution_id = ? AND kind = 'signal'"
            " AND signal_id = ? AND state = 'pending' LIMIT 1", (execution_id, signal_id),
        ).fetchone():
            return seq, None
        reason = f"signal {signal_id}"
        if claim_for is not None and row[1] in claim_for[1]:
            worker_id, _ids, lease_until, audit = claim_for
            [claim] = self._claim_many(conn, txn, [(row, row[4], int(wakeups), True)],
                                       worker_id=worker_id, now=now, lease_until=lease_until,
                                       reason=reason, audit=audit)
            return seq, replace(claim, step_seq=int(step_seq))
        conn.execute(
            "UPDATE executions SET status = 'pending', updated_at = ? WHERE execution_id = ?",
            (now, execution_id),
        )
        self._status_change(conn, txn, execution_id=execution_id, attempt=row[4],
                            old="waiting", new="pending", reason=reason, now=now, audit=True)
        return seq, None

    def cancel_execution(
        self, execution_id: str, *, reason: str | None, now: float, audit: bool = True
    ) -> Execution:
        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            row = conn.execute(
                "SELECT status, attempt FROM executions WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            if row is None:
                raise ExecutionNotFound(execution_id)
            status, attempt = row
            if status not in ACTIVE_STATUSES:
                raise ExecutionNotActive(execution_id, "cancel", status, ACTIVE_STATUSES)
            conn.execute(
                "UPDATE executions SET status = 'cancelled', status_reason = ?, updated_at = ?"
                " WHERE execution_id = ?", (reason or "cancelled", now, execution_id),
            )
            conn.execute(
                "UPDATE timers SET state = 'cancelled' WHERE execution_id = ?"
                " AND state = 'pending'", (execution_id,),
            )
            self._status_change(conn, txn, execution_id=execution_id, attempt=attempt,
                                old=status, new="cancelled", reason=reason or "cancelled",
                                now=now, audit=audit)
            found = conn.execute(
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
            return _execution(found)

        return self._write(job)

    # workers and workflows -------------------------------------------------------------------
    def _lock_path(self, worker_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker_id)
        return self._lock_dir / f"{safe}.lock"

    def register_worker(self, *, worker_id: str, pid: int, hostname: str,
                        real_now: float) -> None:
        """Take this worker's kernel lock (released by the kernel when the process dies, even
        by SIGKILL), then record the worker."""
        # Held already when a grouped batch runs this again (a neighbour failed): keep it.
        if worker_id not in self._worker_locks:
            self._lock_dir.mkdir(mode=0o700, exist_ok=True)
            path = self._lock_path(worker_id)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                raise StorageError(f"worker id {worker_id} is already in use") from exc
            self._worker_locks[worker_id] = fd

        def job(conn: sqlite3.Connection, txn: _Txn) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO workers (worker_id, pid, hostname, started_at,"
                " heartbeat_at) VALUES (?, ?, ?, ?, ?)",
                (worker_id, pid, hostname, real_now, real_now),
            )

        self._write(job)

    def unregister_worker(self, worker_id: str) -> None:
        def job(conn: sqlite3.Connection, txn: _Txn) -> None:
            conn.execute(
                "UPDATE executions SET lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner = ?", (worker_id,),
            )
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

        self._write(job)
        fd = self._worker_locks.pop(worker_id, None)
        with contextlib.suppress(OSError):
            self._lock_path(worker_id).unlink()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _worker_rows(self) -> list[WorkerInfo]:
        rows = self._read(
            "SELECT worker_id, pid, hostname, started_at, heartbeat_at FROM workers"
            " ORDER BY started_at"
        )
        return [WorkerInfo(worker_id=r[0], pid=r[1], hostname=r[2],
                           started_at=to_datetime(r[3]),  # type: ignore[arg-type]
                           heartbeat_at=to_datetime(r[4]))  # type: ignore[arg-type]
                for r in rows]

    def list_workers(self) -> list[WorkerInfo]:
        return self._worker_rows()

    def _is_alive(self, worker_id: str) -> bool:
        if worker_id in self._worker_locks:
            return True
        path = self._lock_path(worker_id)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # its owner still holds it
        finally:
            os.close(fd)  # closing drops the lock we may have taken
        return False

    def live_workers(self) -> list[WorkerInfo]:
        return [w for w in self._worker_rows() if self._is_alive(w.worker_id)]

    def reap_dead_workers(self, *, real_now: float) -> int:
        """Free the leases of workers whose process is gone; returns how many executions."""
        freed = 0
        for worker in self._worker_rows():
            if self._is_alive(worker.worker_id):
                continue
            worker_id = worker.worker_id

            def job(conn: sqlite3.Connection, txn: _Txn, worker_id: str = worker_id) -> int:
                cur = conn.execute(
                    "UPDATE executions SET lease_owner = NULL, lease_until = NULL"
                    " WHERE lease_owner = ?", (worker_id,),
                )
                conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
                return int(cur.rowcount)

            freed += self._write(job)
            with contextlib.suppress(OSError):
                self._lock_path(worker_id).unlink()
            log.info("worker %s (pid %d) is gone; freed %d executions", worker_id, worker.pid,
                     freed)
        # leases held by no registered worker (e.g. a crash before registration finished)
        return freed + self._free_orphan_leases()

    def _free_orphan_leases(self) -> int:
        orphaned = self._read(
            "SELECT 1 FROM executions WHERE lease_owner IS NOT NULL"
            " AND lease_owner NOT IN (SELECT worker_id FROM workers) LIMIT 1")
        if not orphaned:  # the common case: no write, no commit
            return 0

        def job(conn: sqlite3.Connection, txn: _Txn) -> int:
            cur = conn.execute(
                "UPDATE executions SET lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner IS NOT NULL"
                " AND lease_owner NOT IN (SELECT worker_id FROM workers)"
            )
            return int(cur.rowcount)

        return self._write(job)

    def record_workflows(
        self, *, worker_id: str, workflows: Sequence[tuple[Any, ...]], now: float
    ) -> None:
        """Record loaded workflows: ``(id, alias)`` or ``(id, alias, max_attempts,
        retry_backoff, timeout)``, so that a client that starts one without its definition
        still gets the declared attempts, backoff and time-out."""
        rows = [(w[0], w[1], *(tuple(w[2:5]) + (None,) * (5 - len(w))), worker_id, now)
                for w in workflows]

        def job(conn: sqlite3.Connection, txn: _Txn) -> None:
            conn.executemany(
                "INSERT INTO workflows (workflow_id, alias, max_attempts, retry_backoff,"
                " timeout, recorded_by, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (workflow_id) DO UPDATE SET alias = excluded.alias,"
                " max_attempts = excluded.max_attempts, retry_backoff = excluded.retry_backoff,"
                " timeout = excluded.timeout, recorded_by = excluded.recorded_by,"
                " recorded_at = excluded.recorded_at", rows)

        self._write(job)

    def workflow_defaults(self, workflow_id: str) -> dict[str, Any] | None:
        """The declared max_attempts, retry_backoff and timeout a worker recorded."""
        rows = self._read("SELECT max_attempts, retry_backoff, timeout FROM workflows"
                          " WHERE workflow_id = ?", (workflow_id,))
        if not rows:
            return None
        return {"max_attempts": rows[0][0], "retry_backoff": rows[0][1],
                "timeout": rows[0][2]}

    def known_workflows(self) -> dict[str, str | None]:
        return {wid: alias for wid, alias in
                self._read("SELECT workflow_id, alias FROM workflows ORDER BY workflow_id")}

    def prune_executions(self, *, older_than: float, statuses: Sequence[str],
                         batch: int = retention.FIRST_BATCH,
                         budget_s: float = retention.BUDGET_S) -> int:
        """Delete finished executions last changed before ``older_than`` with their steps,
        signals, timers and audit; returns how many. Paced for a daemon that keeps working on
        the file (``durablectl.store.retention``): each batch's size follows from how long the
        last one held the write lock (towards ``budget_s``; ``batch`` is the first size), the
        lock is then left free at least as long, and the WAL is checkpointed in between."""
        allowed = set(FINISHED_STATUSES)
        wanted = [s for s in statuses if s in allowed]
        if not wanted or set(statuses) - allowed:
            raise ValueError(f"prune takes finished statuses only ({', '.join(FINISHED_STATUSES)})")
        marks = ",".join("?" * len(wanted))
        total, size = 0, max(1, int(batch))
        with self._no_auto_checkpoint():
            while True:
                began = [monotonic()]

                def job(conn: sqlite3.Connection, txn: _Txn, size: int = size,
                        began: list[float] = began) -> int:
                    began[0] = monotonic()  # the lock is ours from here to the commit
                    # updated_at >= created_at: the created_at bound lets the (status,
                    # created_at) index end the scan at the cut-off
                    ids = [row[0] for row in conn.execute(
                        f"SELECT execution_id FROM executions WHERE status IN ({marks})"
                        " AND created_at < ? AND updated_at < ? LIMIT ?",
                        (*wanted, older_than, older_than, size))]
                    if ids:  # children first: one statement each, not a cascade per row
                        where = f" WHERE execution_id IN ({','.join('?' * len(ids))})"
                        for table in ("audit", "steps", "signals", "timers", "executions"):
                            conn.execute(f"DELETE FROM {table}{where}", ids)
                    return len(ids)

                deleted = self._write(job)
                held = monotonic() - began[0]
                total += deleted
                if deleted < size:
                    return total
                size = retention.next_batch(size, held, budget_s)
                started = monotonic()
                self._checkpoint_passive()
                time.sleep(retention.pause_after(held, monotonic() - started))

    @contextlib.contextmanager
    def _no_auto_checkpoint(self) -> Iterator[None]:
        """The pruner checkpoints between its batches instead of inside its commits."""
        with self._wlock:
            previous = self._wconn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            self._wconn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            with self._wlock, contextlib.suppress(sqlite3.Error):
                self._wconn.execute(f"PRAGMA wal_autocheckpoint = {int(previous)}")
                self._checkpoint_passive()

    def _checkpoint_passive(self) -> None:
        """Copy the WAL into the file as far as readers allow; never waits for a lock."""
        with self._wlock, contextlib.suppress(sqlite3.Error):
            self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def vacuum(self) -> None:
        """Compact the file (rewrites it: run it when nothing else is busy)."""
        with self._wlock:
            try:
                self._wconn.execute("VACUUM")
            except sqlite3.Error as exc:
                raise self._storage_error(exc) from exc

    def set_meta(self, key: str, value: str | None) -> None:
        def job(conn: sqlite3.Connection, txn: _Txn) -> None:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (key, value))

        self._write(job)

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else rows[0][0]

    # helpers for tests and tools -------------------------------------------------------------
    @contextlib.contextmanager
    def raw_read(self) -> Iterator[sqlite3.Connection]:
        """A read connection for tests and diagnostics."""
        yield self._reader()


def _iso(ts: float | None) -> str | None:
    value = to_datetime(ts)
    return None if value is None else value.isoformat().replace("+00:00", "Z")
