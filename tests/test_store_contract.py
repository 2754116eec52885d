"""The store contract (STYLE habit 4): one suite that every store implementation must pass.

Each test runs once per (backend, write path). The write paths are the plain synchronous call
(the CLI, the client, scripts), the grouped path the engine uses,
``store.submit(store.method, **kwargs).result()``, where a writer thread puts many jobs in one
commit, and the engine's path on an event loop (``FutureBridge.call``), which a store whose
commits do not wait for the disk (SQLite at NORMAL) commits on that loop. A new store
(Postgres) plugs in by adding a ``Backend`` factory to ``BACKENDS``.

Times are plain floats passed in: ``now`` is workflow (clock) time, ``real_now`` is wall time for
leases; nothing waits on real time beyond a few milliseconds of polling.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from durablectl.errors import (
    DurableError,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionNotActive,
    ExecutionNotFound,
    ExecutionStateError,
    LeaseLost,
    StepIdError,
    StorageError,
)
from durablectl.model import AuditEntry, ErrorInfo, StepRecord
from durablectl.store.base import Claim, NewTimer, Store
from durablectl.store.sqlite import SqliteStore

T0 = 1_900_000_000.0  # workflow time (2030-03-17)
R0 = 1_800_000_000.0  # wall time for leases, deliberately unrelated to T0
LEASE = 30.0
WF = "orders.v1"
OTHER_WF = "billing.v1"
REPO = Path(__file__).resolve().parents[1]

# Every write method of the Store protocol; in grouped mode these go through ``submit``.
WRITE_METHODS = frozenset({
    "create_execution", "create_and_claim", "claim_ready", "claim_execution", "record_step",
    "consume_signal",
    "park", "finish", "schedule_retry", "release", "fire_due_timers", "heartbeat",
    "mark_unloaded", "append_signal", "cancel_execution", "register_worker",
    "unregister_worker", "reap_dead_workers", "record_workflows",
    "retry_execution", "retry_rollback", "skip_step", "edit_step_result", "force_fail",
    "fork_execution",
})


# backends ------------------------------------------------------------------------------------
@dataclass
class Backend:
    """How a test reaches one store implementation.

    ``open`` makes a new store object on this test's database (a second call is a second
    worker's view of the same data); ``child_code`` is Python that binds ``store`` to the same
    database in another process; ``drop`` tears the database down after the test.
    """

    open: Callable[[], Any]
    child_code: str
    drop: Callable[[], None] = lambda: None
    # a store as an engine on an event loop gets it where that differs (None: the same)
    open_for_loop: Callable[[], Any] | None = None


def sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "contract.db"
    return Backend(
        open=lambda: SqliteStore(path),
        child_code=f"from durablectl.store.sqlite import SqliteStore\n"
                   f"store = SqliteStore({str(path)!r})",
        # commits on the submitting loop (store/sqlite_loop.py)
        open_for_loop=lambda: SqliteStore(path, synchronous="NORMAL"),
    )


# A Postgres store adds e.g. "postgres": postgres_backend (skipping when no server is set up).
BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": sqlite_backend}
WRITE_PATHS = ("direct", "grouped", "loop")


class GroupedWrites:
    """A store whose writes go through ``submit(...).result()``, as the engine's do."""

    def __init__(self, store: Any) -> None:
        self.raw = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if name not in WRITE_METHODS:
            return attr

        def grouped(*args: Any, **kwargs: Any) -> Any:
            return self.raw.submit(attr, *args, **kwargs).result(timeout=10)

        return grouped


class LoopWrites(GroupedWrites):
    """A store whose writes are awaited on an event loop (a thread of the test's), through the
    engine's ``FutureBridge``, as a service's are."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(store)
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if name not in WRITE_METHODS:
            return attr

        async def write(*args: Any, **kwargs: Any) -> Any:
            from durablectl.bridge import FutureBridge

            return await FutureBridge(self.raw, asyncio.get_running_loop()).call(
                attr, *args, **kwargs)

        def on_loop(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(write(*args, **kwargs),
                                                    self.loop).result(timeout=10)

        return on_loop


@dataclass
class StoreEnv:
    backend: Backend
    mode: str
    opened: list[Any] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    loop_thread: threading.Thread | None = None

    def open(self) -> Any:
        """A store on the test's database, writing through this test's write path."""
        if self.mode == "loop":
            raw = (self.backend.open_for_loop or self.backend.open)()
            self.opened.append(raw)
            return LoopWrites(raw, self._loop())
        raw = self.backend.open()
        self.opened.append(raw)
        return raw if self.mode == "direct" else GroupedWrites(raw)

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self.loop_thread.start()
        return self.loop

    def close_all(self) -> None:
        for raw in self.opened:
            raw.close()
        if self.loop is not None and self.loop_thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.loop_thread.join(timeout=10)
            self.loop.close()
        self.backend.drop()


@pytest.fixture(
    params=[(b, m) for b in BACKENDS for m in WRITE_PATHS], ids=lambda p: f"{p[0]}-{p[1]}"
)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreEnv]:
    backend_name, mode = request.param
    environment = StoreEnv(BACKENDS[backend_name](tmp_path), mode)
    yield environment
    environment.close_all()


@pytest.fixture
def store(env: StoreEnv) -> Any:
    """The store under test (overrides conftest's plain SqliteStore)."""
    return env.open()


def raw(store: Any) -> Store:
    return store.raw if isinstance(store, GroupedWrites) else store


# helpers -------------------------------------------------------------------------------------
def dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: float) -> str:
    return dt(ts).isoformat().replace("+00:00", "Z")


def start(store: Any, *, workflow: str = WF, input_json: str | None = None,
          key: str | None = None, now: float = T0, deadline: float | None = None,
          max_attempts: int = 3, audit: bool = True) -> str:
    execution_id = f"ex-{uuid.uuid4().hex[:12]}"
    got, created = store.create_execution(
        execution_id=execution_id, workflow_id=workflow, input_json=input_json,
        max_attempts=max_attempts, retry_backoff=2.0, now=now, deadline=deadline,
        idempotency_key=key, audit=audit)
    assert (got, created) == (execution_id, True)
    return execution_id


def claim(store: Any, execution_id: str, worker: str = "w1", *, now: float = T0,
          real_now: float = R0, workflows: tuple[str, ...] = (WF,)) -> Claim:
    found = store.claim_execution(execution_id, worker_id=worker, workflow_ids=list(workflows),
                                  now=now, real_now=real_now, lease_until=real_now + LEASE)
    assert found is not None, f"{worker} could not claim {execution_id}"
    return found


def record(store: Any, execution_id: str, step_id: str, *, worker: str = "w1",
           kind: str = "step", result_json: str | None = "null", error: ErrorInfo | None = None,
           attempt: int = 1, started_at: float | None = None, now: float = T0,
           audit_entries: tuple[tuple[str, dict[str, Any]], ...] = (), audit: bool = True) -> int:
    return int(store.record_step(
        execution_id=execution_id, worker_id=worker, step_id=step_id, kind=kind,
        result_json=result_json, error=error, attempt=attempt,
        started_at=now if started_at is None else started_at, completed_at=now, now=now,
        audit_entries=audit_entries, audit=audit))


def park(store: Any, execution_id: str, timers: list[NewTimer], *, status: str,
         wakeups: int = 0, worker: str = "w1", attempt: int = 1, now: float = T0) -> str:
    return str(store.park(execution_id=execution_id, worker_id=worker, status=status,
                          wakeups_seen=wakeups, timers=timers, attempt=attempt, now=now))


def consume(store: Any, execution_id: str, step_id: str, signal_id: str = "approved", *,
            worker: str = "w1", attempt: int = 1, now: float = T0) -> StepRecord | None:
    found: StepRecord | None = store.consume_signal(
        execution_id=execution_id, worker_id=worker, signal_id=signal_id, step_id=step_id,
        attempt=attempt, now=now)
    return found


def send(store: Any, execution_id: str, payload: Any = None, signal_id: str = "approved", *,
         now: float = T0) -> int:
    return int(store.append_signal(execution_id=execution_id, signal_id=signal_id,
                                   payload_json=json.dumps(payload), now=now))


def fire(store: Any, now: float, worker: str = "w1", *, real_now: float = R0,
         workflows: tuple[str, ...] = (WF,), limit: int = 100) -> list[Claim]:
    claims: list[Claim] = store.fire_due_timers(
        worker_id=worker, workflow_ids=list(workflows), now=now, real_now=real_now,
        lease_until=real_now + LEASE, limit=limit)
    return claims


def finish(store: Any, execution_id: str, *, status: str = "completed", worker: str = "w1",
           result_json: str | None = None, error: ErrorInfo | None = None,
           reason: str | None = None, now: float = T0) -> bool:
    return bool(store.finish(execution_id=execution_id, worker_id=worker, status=status,
                             result_json=result_json, error=error, reason=reason, now=now))


def status_of(store: Any, execution_id: str) -> str:
    return str(store.get_execution(execution_id).status)


def steps_of(store: Any, execution_id: str) -> dict[str, StepRecord]:
    return {s.step_id: s for s in store.list_step_results(execution_id)}


def audit_of(store: Any, execution_id: str, kind: str | None = None) -> list[AuditEntry]:
    entries: list[AuditEntry] = store.list_audit_entries(execution_id)
    return [e for e in entries if kind is None or e.kind == kind]


def changes(store: Any, execution_id: str) -> list[tuple[str | None, str, str | None]]:
    return [(e.data["from"], e.data["to"], e.data["reason"])
            for e in audit_of(store, execution_id, "execution_status_changed")]


def sleeping(store: Any, due: float = T0 + 60, step_id: str = "nap") -> str:
    """An execution parked on one sleep."""
    execution_id = start(store)
    claim(store, execution_id)
    assert park(store, execution_id, [NewTimer("sleep", step_id, due)], status="sleeping") == (
        "sleeping")
    return execution_id


def waiting(store: Any, due: float | None = None, step_id: str = "approval",
            signal_id: str = "approved") -> str:
    """An execution parked on one signal wait (``due``: its time-out)."""
    execution_id = start(store)
    claim(store, execution_id)
    timer = NewTimer("signal", step_id, due, signal_id=signal_id)
    assert park(store, execution_id, [timer], status="waiting") == "waiting"
    return execution_id


def eventually(predicate: Callable[[], Any], timeout: float = 2.0) -> None:
    """Wait (briefly, in real time) for something another thread does after a commit."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.002)


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once (released together by a barrier); re-raise the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    if errors:
        raise errors[0]
    return results


# create, get, list ---------------------------------------------------------------------------
def test_create_execution_stores_a_pending_execution(store: Any) -> None:
    execution_id = start(store, input_json='{"id": 7, "items": [1, "two", null]}',
                         max_attempts=5)
    found = store.get_execution(execution_id)
    assert found.execution_id == execution_id
    assert found.workflow_id == WF
    assert found.status == "pending"
    assert found.attempt == 1
    assert found.max_attempts == 5
    assert found.input == {"id": 7, "items": [1, "two", None]}
    assert found.result is None and found.error is None
    assert found.created_at == dt(T0) and found.updated_at == dt(T0)
    assert found.deadline is None and found.idempotency_key is None
    assert found.lease_owner is None
    assert found.is_active


def test_create_execution_without_input_stores_null(store: Any) -> None:
    execution_id = start(store, input_json=None)
    assert store.get_execution(execution_id).input is None


def test_idempotency_key_returns_the_existing_execution_whatever_the_input(store: Any) -> None:
    first = start(store, input_json='{"n": 1}', key="order-42")
    again = store.create_execution(
        execution_id="ex-second", workflow_id=WF, input_json='{"n": 2}', max_attempts=3,
        retry_backoff=2.0, now=T0 + 5, idempotency_key="order-42")
    assert again == (first, False)
    assert store.get_execution("ex-second") is None
    assert store.get_execution(first).input == {"n": 1}
    assert store.get_execution(first).idempotency_key == "order-42"
    assert [e.execution_id for e in store.list_executions()] == [first]


def test_idempotency_key_is_scoped_to_the_workflow_id(store: Any) -> None:
    first = start(store, key="k")
    other = start(store, workflow=OTHER_WF, key="k")
    assert other != first
    assert store.get_execution(other).workflow_id == OTHER_WF


def test_concurrent_starts_with_one_key_make_one_execution(env: StoreEnv) -> None:
    stores = [env.open(), env.open()]

    def create(index: int) -> tuple[str, bool]:
        result: tuple[str, bool] = stores[index % 2].create_execution(
            execution_id=f"ex-{index}", workflow_id=WF, input_json=None, max_attempts=3,
            retry_backoff=2.0, now=T0, idempotency_key="once")
        return result

    results = in_threads(*[lambda i=i: create(i) for i in range(8)])
    assert len({execution_id for execution_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(stores[0].list_executions()) == 1


def test_duplicate_execution_id_is_refused_and_changes_nothing(store: Any) -> None:
    execution_id = start(store, input_json='"first"')
    with pytest.raises(DurableError):
        store.create_execution(execution_id=execution_id, workflow_id=OTHER_WF,
                               input_json='"second"', max_attempts=3, retry_backoff=2.0,
                               now=T0 + 1)
    found = store.get_execution(execution_id)
    assert (found.workflow_id, found.input) == (WF, "first")


def test_create_execution_with_a_deadline_arms_its_timeout(store: Any) -> None:
    execution_id = start(store, deadline=T0 + 100)
    assert store.get_execution(execution_id).deadline == dt(T0 + 100)
    assert store.next_due_at() == T0 + 100


def test_create_execution_audits_the_new_status(store: Any) -> None:
    execution_id = start(store, now=T0 + 3)
    [entry] = audit_of(store, execution_id)
    assert entry.kind == "execution_status_changed"
    assert entry.data == {"from": None, "to": "pending", "reason": "created"}
    assert (entry.execution_id, entry.attempt, entry.at) == (execution_id, 1, dt(T0 + 3))
    assert entry.seq > 0


def test_create_execution_without_audit_writes_no_entry(store: Any) -> None:
    execution_id = start(store, audit=False)
    assert audit_of(store, execution_id) == []


def test_get_execution_of_an_unknown_id_is_none(store: Any) -> None:
    assert store.get_execution("nope") is None
    assert store.list_step_results("nope") == []
    assert store.list_audit_entries("nope") == []


def test_list_executions_is_newest_first_with_limit_and_offset(store: Any) -> None:
    ids = [start(store, now=T0 + i) for i in range(5)]
    newest_first = list(reversed(ids))
    assert [e.execution_id for e in store.list_executions()] == newest_first
    assert [e.execution_id for e in store.list_executions(limit=2)] == newest_first[:2]
    assert [e.execution_id for e in store.list_executions(limit=2, offset=2)] == (
        newest_first[2:4])
    assert [e.execution_id for e in store.list_executions(limit=10, offset=4)] == (
        newest_first[4:])
    assert store.list_executions(offset=5) == []


def test_list_executions_filters_by_status_and_workflow(store: Any) -> None:
    pending = start(store, now=T0)
    other = start(store, workflow=OTHER_WF, now=T0 + 1)
    running = start(store, now=T0 + 2)
    claim(store, running)
    cancelled = start(store, workflow=OTHER_WF, now=T0 + 3)
    store.cancel_execution(cancelled, reason=None, now=T0 + 3)

    def ids(**kwargs: Any) -> list[str]:
        return [e.execution_id for e in store.list_executions(**kwargs)]

    assert ids(status="pending") == [other, pending]
    assert ids(status=["running", "cancelled"]) == [cancelled, running]
    assert ids(workflow=OTHER_WF) == [cancelled, other]
    assert ids(workflow=OTHER_WF, status="pending") == [other]
    assert ids(status="completed") == []
    assert ids(workflow="missing.v1") == []


def test_count_executions_counts_by_status(store: Any) -> None:
    start(store)
    start(store)
    claim(store, start(store))
    assert store.count_executions() == {"pending": 2, "running": 1}


def test_ended_among_names_the_executions_that_finished_or_do_not_exist(store: Any) -> None:
    pending, running, done, cancelled = start(store), start(store), start(store), start(store)
    claim(store, running)
    claim(store, done)
    finish(store, done)
    store.cancel_execution(cancelled, reason=None, now=T0)
    asked = [pending, running, done, cancelled, "gone", done]
    assert raw(store).ended_among(asked) == {done, cancelled, "gone"}
    assert raw(store).ended_among([]) == set()
    many = [start(store) for _ in range(3)] + [f"none-{i}" for i in range(600)]
    assert raw(store).ended_among(many) == set(many[3:])  # more ids than one read takes


def test_count_in_flight_counts_active_executions_per_workflow(store: Any) -> None:
    assert store.count_in_flight() == {}
    start(store)
    claim(store, start(store))
    done = start(store)
    claim(store, done)
    finish(store, done)
    store.cancel_execution(start(store, workflow=OTHER_WF), reason=None, now=T0)
    assert store.count_in_flight() == {WF: 2}
    start(store, workflow=OTHER_WF)
    assert store.count_in_flight() == {WF: 2, OTHER_WF: 1}


# claiming ------------------------------------------------------------------------------------
def test_claim_ready_takes_the_oldest_pending_and_marks_them_running(store: Any) -> None:
    ids = [start(store, now=T0 + i) for i in range(3)]
    first = store.claim_ready(worker_id="w1", workflow_ids=[WF], now=T0 + 10, real_now=R0,
                              lease_until=R0 + LEASE, limit=2)
    assert [c.execution.execution_id for c in first] == ids[:2]
    assert [c.wakeups for c in first] == [0, 0]
    for execution_id in ids[:2]:
        found = store.get_execution(execution_id)
        assert (found.status, found.lease_owner) == ("running", "w1")
        assert found.updated_at == dt(T0 + 10)
        assert changes(store, execution_id)[-1] == ("pending", "running", "claimed")
    assert status_of(store, ids[2]) == "pending"
    rest = store.claim_ready(worker_id="w2", workflow_ids=[WF], now=T0 + 10, real_now=R0,
                             lease_until=R0 + LEASE, limit=10)
    assert [c.execution.execution_id for c in rest] == ids[2:]
    assert store.claim_ready(worker_id="w3", workflow_ids=[WF], now=T0 + 10, real_now=R0,
                             lease_until=R0 + LEASE, limit=10) == []


def test_create_and_claim_stores_what_a_create_then_a_claim_would(store: Any) -> None:
    """A daemon taking a start it has room for writes it once, already running under its
    lease: the row, the claim and the audit trail are those of a create and then a claim."""
    apart = start(store, input_json='{"n": 1}', deadline=T0 + 3600)
    claim(store, apart, "w1")
    together, created, claimed = store.create_and_claim(
        execution_id="ex-together", workflow_id=WF, input_json='{"n": 1}', max_attempts=3,
        retry_backoff=2.0, now=T0, deadline=T0 + 3600, worker_id="w1",
        lease_until=R0 + LEASE)
    assert (together, created) == ("ex-together", True) and claimed is not None
    assert (claimed.wakeups, claimed.has_history, claimed.step_seq) == (0, False, 0)
    assert claimed.execution == store.get_execution(together)
    one, other = store.get_execution(apart), store.get_execution(together)
    assert replace(one, execution_id=together) == other
    assert (other.status, other.lease_owner) == ("running", "w1")
    assert changes(store, together) == changes(store, apart) == [
        (None, "pending", "created"), ("pending", "running", "claimed")]
    assert store.next_due_at() == T0 + 3600  # its time-out is armed
    assert record(store, together, "a") == 1  # the lease is ours: the run goes on
    keyed = start(store, key="k1")
    assert store.create_and_claim(
        execution_id="ex-again", workflow_id=WF, input_json=None, max_attempts=3,
        retry_backoff=2.0, now=T0, idempotency_key="k1", worker_id="w1",
        lease_until=R0 + LEASE) == (keyed, False, None)
    assert status_of(store, keyed) == "pending"


def test_execution_version_changes_with_what_show_prints(store: Any) -> None:
    execution_id = start(store)
    seen = [store.execution_version(execution_id)]
    assert seen[0] is not None and store.execution_version(execution_id) == seen[0]
    claim(store, execution_id)
    seen.append(store.execution_version(execution_id))
    record(store, execution_id, "a", now=T0)  # same instant: the step counter tells
    seen.append(store.execution_version(execution_id))
    finish(store, execution_id)
    seen.append(store.execution_version(execution_id))
    assert len(set(seen)) == 4, seen
    assert store.execution_version("nope") is None


def test_claim_only_takes_loaded_workflows(store: Any) -> None:
    other = start(store, workflow=OTHER_WF)
    claims = store.claim_ready(worker_id="w1", workflow_ids=[WF], now=T0, real_now=R0,
                               lease_until=R0 + LEASE, limit=10)
    assert claims == []
    assert store.claim_ready(worker_id="w1", workflow_ids=[], now=T0, real_now=R0,
                             lease_until=R0 + LEASE, limit=10) == []
    assert store.claim_execution(other, worker_id="w1", workflow_ids=[WF], now=T0,
                                 real_now=R0, lease_until=R0 + LEASE) is None
    assert store.claim_execution(other, worker_id="w1", workflow_ids=[], now=T0,
                                 real_now=R0, lease_until=R0 + LEASE) is None
    assert status_of(store, other) == "pending"
    assert claim(store, other, workflows=(WF, OTHER_WF)).execution.workflow_id == OTHER_WF


def test_claim_skips_parked_and_finished_executions(store: Any) -> None:
    asleep = sleeping(store)
    waits = waiting(store)
    retrying = start(store)
    claim(store, retrying)
    store.schedule_retry(execution_id=retrying, worker_id="w1", error=ErrorInfo("E", "m"),
                         due_at=T0 + 2, now=T0)
    done = start(store)
    claim(store, done)
    finish(store, done)
    cancelled = start(store)
    store.cancel_execution(cancelled, reason="no", now=T0)
    later = R0 + 10 * LEASE
    assert store.claim_ready(worker_id="w2", workflow_ids=[WF], now=T0, real_now=later,
                             lease_until=later + LEASE, limit=10) == []
    for execution_id in (asleep, waits, retrying, done, cancelled):
        assert store.claim_execution(execution_id, worker_id="w2", workflow_ids=[WF], now=T0,
                                     real_now=later, lease_until=later + LEASE) is None
    assert store.claim_execution("unknown", worker_id="w2", workflow_ids=[WF], now=T0,
                                 real_now=later, lease_until=later + LEASE) is None


def test_a_live_lease_is_respected_and_an_expired_one_is_taken(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id, "w1", real_now=R0)  # lease until R0 + 30
    assert store.claim_execution(execution_id, worker_id="w2", workflow_ids=[WF], now=T0,
                                 real_now=R0 + LEASE - 1, lease_until=R0 + 2 * LEASE) is None
    assert store.claim_ready(worker_id="w2", workflow_ids=[WF], now=T0,
                             real_now=R0 + LEASE - 1, lease_until=R0 + 2 * LEASE,
                             limit=10) == []
    taken = store.claim_ready(worker_id="w2", workflow_ids=[WF], now=T0,
                              real_now=R0 + LEASE + 1, lease_until=R0 + 2 * LEASE, limit=10)
    assert [c.execution.execution_id for c in taken] == [execution_id]
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("running", "w2")
    with pytest.raises(LeaseLost) as lost:
        record(store, execution_id, "a", worker="w1")
    assert (lost.value.execution_id, lost.value.worker_id) == (execution_id, "w1")
    record(store, execution_id, "a", worker="w2")
    assert list(steps_of(store, execution_id)) == ["a"]


def test_two_workers_claiming_at_once_never_share_an_execution(env: StoreEnv) -> None:
    one, two = env.open(), env.open()
    ids = {start(one, now=T0 + i) for i in range(10)}

    def claim_all(store: Any, worker: str) -> list[str]:
        claims = store.claim_ready(worker_id=worker, workflow_ids=[WF], now=T0, real_now=R0,
                                   lease_until=R0 + LEASE, limit=10)
        return [c.execution.execution_id for c in claims]

    first, second = in_threads(lambda: claim_all(one, "w1"), lambda: claim_all(two, "w2"))
    assert not set(first) & set(second)
    assert set(first) | set(second) == ids
    owners = {e.execution_id: e.lease_owner for e in one.list_executions()}
    assert all(owners[i] == "w1" for i in first) and all(owners[i] == "w2" for i in second)


def test_released_execution_is_claimable_at_once_and_keeps_its_reason(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id, "w1")
    store.release(execution_id, worker_id="w2")  # not w2's: nothing happens
    assert store.get_execution(execution_id).lease_owner == "w1"
    store.release(execution_id, worker_id="w1", status_reason="workflow not loaded here")
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("running", None)
    assert found.status_reason == "workflow not loaded here"
    claim(store, execution_id, "w2", real_now=R0 + 1)
    found = store.get_execution(execution_id)
    assert (found.lease_owner, found.status_reason) == ("w2", None)


def test_mark_unloaded_gives_queued_executions_a_reason_once(store: Any) -> None:
    mine = start(store)
    theirs = start(store, workflow=OTHER_WF)
    held = start(store, workflow=OTHER_WF)
    claim(store, held, workflows=(OTHER_WF,))
    assert store.mark_unloaded(workflow_ids=[WF], reason_prefix="not loaded: ") == 1
    assert store.get_execution(theirs).status_reason == f"not loaded: {OTHER_WF}"
    assert store.get_execution(mine).status_reason is None
    assert store.get_execution(held).status_reason is None
    assert status_of(store, theirs) == "pending"
    assert store.mark_unloaded(workflow_ids=[WF], reason_prefix="not loaded: ") == 0
    claim(store, theirs, workflows=(OTHER_WF,))
    assert store.get_execution(theirs).status_reason is None


# steps ---------------------------------------------------------------------------------------
def test_record_step_stores_results_in_completion_order(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    seqs = [
        record(store, execution_id, "charge", result_json='{"ok": true}', started_at=T0,
               now=T0 + 1.5),
        record(store, execution_id, "notify", kind="emit", result_json='"sent"', now=T0 + 2),
        record(store, execution_id, "a-last", result_json="[1, 2]", now=T0 + 3),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    results = store.list_step_results(execution_id)
    assert [s.step_id for s in results] == ["charge", "notify", "a-last"]
    assert [s.seq for s in results] == seqs
    charge = results[0]
    assert (charge.kind, charge.result, charge.error, charge.attempt) == (
        "step", {"ok": True}, None, 1)
    assert (charge.started_at, charge.completed_at) == (dt(T0), dt(T0 + 1.5))
    assert charge.duration_ms == pytest.approx(1500.0)
    assert (results[1].kind, results[1].result) == ("emit", "sent")


def test_record_step_overwrites_a_failed_step(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    error = ErrorInfo("ValueError", "card declined", "Traceback ...")
    first = record(store, execution_id, "charge", result_json=None, error=error, attempt=1)
    [failed] = store.list_step_results(execution_id)
    assert (failed.error, failed.result, failed.attempt) == (error, None, 1)
    second = record(store, execution_id, "charge", result_json='"ch_1"', attempt=2,
                    now=T0 + 10)
    assert second > first
    [done] = store.list_step_results(execution_id)
    assert (done.error, done.result, done.attempt, done.seq) == (None, "ch_1", 2, second)
    assert done.completed_at == dt(T0 + 10)


def test_record_step_needs_the_lease(store: Any) -> None:
    execution_id = start(store)
    with pytest.raises(LeaseLost):  # pending, nobody holds it
        record(store, execution_id, "a")
    claim(store, execution_id, "w1")
    with pytest.raises(LeaseLost):
        record(store, execution_id, "a", worker="w2")
    assert store.list_step_results(execution_id) == []
    with pytest.raises(ExecutionNotFound):
        record(store, "unknown", "a")


def test_record_step_after_cancel_raises_execution_cancelled(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    store.cancel_execution(execution_id, reason="operator said so", now=T0)
    with pytest.raises(ExecutionCancelled) as cancelled:
        record(store, execution_id, "a")
    assert cancelled.value.reason == "operator said so"
    assert store.list_step_results(execution_id) == []


def test_record_step_writes_the_audit_entries_it_is_given(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    data = {"step_id": "a", "duration_ms": 12.5, "internal": False}
    record(store, execution_id, "a", attempt=1, now=T0 + 4,
           audit_entries=(("step_completed", data),))
    [entry] = audit_of(store, execution_id, "step_completed")
    assert (entry.data, entry.attempt, entry.at) == (data, 1, dt(T0 + 4))
    record(store, execution_id, "b", audit_entries=(("step_completed", data),), audit=False)
    assert len(audit_of(store, execution_id, "step_completed")) == 1


def test_load_history_has_steps_and_pending_timers(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    record(store, execution_id, "a", result_json="1")
    park(store, execution_id, [NewTimer("sleep", "nap", T0 + 60),
                               NewTimer("signal", "approval", None, signal_id="approved")],
         status="waiting")
    history = store.load_history(execution_id)
    assert list(history.steps) == ["a"] and history.steps["a"].result == 1
    assert history.timers[("sleep", "nap")] == T0 + 60
    assert history.timers[("signal", "approval")] is None


# signals -------------------------------------------------------------------------------------
def test_append_signal_refuses_unknown_and_finished_executions(store: Any) -> None:
    with pytest.raises(ExecutionNotFound):
        send(store, "unknown")
    done = start(store)
    claim(store, done)
    finish(store, done)
    failed = start(store)
    claim(store, failed)
    finish(store, failed, status="failed", error=ErrorInfo("E", "boom"), reason="E: boom")
    cancelled = start(store)
    store.cancel_execution(cancelled, reason=None, now=T0)
    for execution_id, status in ((done, "completed"), (failed, "failed"),
                                 (cancelled, "cancelled")):
        with pytest.raises(ExecutionNotActive) as refused:
            send(store, execution_id)
        assert isinstance(refused.value, ExecutionStateError)
        assert refused.value.status == status
        assert refused.value.exit_code == 2


def test_append_signal_numbers_per_execution_and_signal(store: Any) -> None:
    one, two = start(store), start(store)
    assert [send(store, one, i) for i in range(3)] == [1, 2, 3]
    assert send(store, one, "x", signal_id="other") == 1
    assert send(store, two, "y") == 1


def test_consume_signal_is_fifo_and_exactly_once(store: Any) -> None:
    execution_id = start(store)
    send(store, execution_id, {"n": 1})
    send(store, execution_id, {"n": 2})
    send(store, execution_id, "ignored", signal_id="other")
    claim(store, execution_id)
    first = consume(store, execution_id, "wait-1", now=T0 + 1)
    second = consume(store, execution_id, "wait-2", now=T0 + 2)
    assert first is not None and second is not None
    assert first.result == {"kind": "signal", "payload": {"n": 1}}
    assert second.result == {"kind": "signal", "payload": {"n": 2}}
    assert (first.kind, first.step_id, first.completed_at) == ("signal", "wait-1", dt(T0 + 1))
    assert second.seq > first.seq
    assert consume(store, execution_id, "wait-3", now=T0 + 3) is None
    stored = steps_of(store, execution_id)
    assert set(stored) == {"wait-1", "wait-2"}
    assert stored["wait-2"].result == second.result and stored["wait-2"].seq == second.seq
    delivered = audit_of(store, execution_id, "signal_delivered")
    assert [e.data for e in delivered] == [
        {"step_id": "wait-1", "signal": "approved", "seq": 1},
        {"step_id": "wait-2", "signal": "approved", "seq": 2},
    ]


def test_consume_signal_again_for_the_same_wait_takes_no_second_signal(store: Any) -> None:
    execution_id = start(store)
    send(store, execution_id, "a")
    send(store, execution_id, "b")
    claim(store, execution_id)
    first = consume(store, execution_id, "wait")
    again = consume(store, execution_id, "wait", now=T0 + 5)
    assert first is not None and again is not None
    assert again.result == first.result == {"kind": "signal", "payload": "a"}
    later = consume(store, execution_id, "next")
    assert later is not None and later.result["payload"] == "b"


def test_concurrent_waits_get_different_signals_in_order(store: Any) -> None:
    execution_id = start(store)
    send(store, execution_id, "first")
    send(store, execution_id, "second")
    claim(store, execution_id)
    got = in_threads(lambda: consume(store, execution_id, "left"),
                     lambda: consume(store, execution_id, "right"))
    assert sorted(s.result["payload"] for s in got) == ["first", "second"]
    by_seq = sorted(got, key=lambda s: s.seq)
    assert [s.result["payload"] for s in by_seq] == ["first", "second"]


def test_consume_signal_with_nothing_buffered_returns_none_and_records_nothing(
        store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    send(store, execution_id, "x", signal_id="other")
    assert consume(store, execution_id, "wait") is None
    assert store.list_step_results(execution_id) == []
    assert audit_of(store, execution_id, "signal_delivered") == []


def test_a_null_payload_is_delivered_as_null(store: Any) -> None:
    execution_id = start(store)
    store.append_signal(execution_id=execution_id, signal_id="approved", payload_json=None,
                        now=T0)
    claim(store, execution_id)
    got = consume(store, execution_id, "wait")
    assert got is not None and got.result == {"kind": "signal", "payload": None}


def test_consume_signal_needs_the_lease(store: Any) -> None:
    execution_id = start(store)
    send(store, execution_id, "kept")
    claim(store, execution_id, "w1")
    with pytest.raises(LeaseLost):
        consume(store, execution_id, "wait", worker="w2")
    assert store.list_step_results(execution_id) == []
    got = consume(store, execution_id, "wait", worker="w1")
    assert got is not None and got.result["payload"] == "kept"


def test_consume_signal_after_cancel_raises_and_leaves_the_signal(store: Any) -> None:
    execution_id = start(store)
    send(store, execution_id, "kept")
    claim(store, execution_id)
    store.cancel_execution(execution_id, reason=None, now=T0)
    with pytest.raises(ExecutionCancelled):
        consume(store, execution_id, "wait")
    assert store.list_step_results(execution_id) == []


def test_a_signal_wakes_a_waiting_execution_only_when_it_waits_for_it(store: Any) -> None:
    execution_id = waiting(store, signal_id="approved")
    send(store, execution_id, "x", signal_id="other", now=T0 + 1)
    assert status_of(store, execution_id) == "waiting"
    send(store, execution_id, "yes", now=T0 + 2)
    found = store.get_execution(execution_id)
    assert (found.status, found.updated_at) == ("pending", dt(T0 + 2))
    assert changes(store, execution_id)[-1] == ("waiting", "pending", "signal approved")
    woken = claim(store, execution_id, "w2", real_now=R0 + 1)
    assert woken.wakeups == 2
    got = consume(store, execution_id, "approval", worker="w2")
    assert got is not None and got.result["payload"] == "yes"


def test_a_signal_leaves_other_statuses_alone(store: Any) -> None:
    asleep = sleeping(store)
    send(store, asleep, "x")
    assert status_of(store, asleep) == "sleeping"
    pending = start(store)
    send(store, pending, "x")
    assert status_of(store, pending) == "pending"
    running = start(store)
    claim(store, running)
    send(store, running, "x")
    found = store.get_execution(running)
    assert (found.status, found.lease_owner) == ("running", "w1")


def test_a_consumed_signal_cancels_the_wait_timeout(store: Any) -> None:
    execution_id = waiting(store, due=T0 + 50)
    send(store, execution_id, "in time", now=T0 + 10)
    claim(store, execution_id, real_now=R0 + 1)
    got = consume(store, execution_id, "approval", now=T0 + 11)
    assert got is not None and got.result["payload"] == "in time"
    assert got.started_at == dt(T0)  # the wait began when it parked
    assert store.next_due_at() is None
    assert fire(store, T0 + 100) == []
    assert steps_of(store, execution_id)["approval"].result == {
        "kind": "signal", "payload": "in time"}
    assert audit_of(store, execution_id, "signal_timed_out") == []


def test_a_fired_timeout_wins_over_a_later_signal(store: Any) -> None:
    execution_id = waiting(store, due=T0 + 50)
    [woken] = fire(store, T0 + 50, "w1", real_now=R0 + 1)
    assert woken.execution.execution_id == execution_id
    assert send(store, execution_id, "too late", now=T0 + 51) == 1
    got = consume(store, execution_id, "approval", now=T0 + 52)
    assert got is not None and got.result == {"kind": "timeout"}
    assert steps_of(store, execution_id)["approval"].result == {"kind": "timeout"}
    assert audit_of(store, execution_id, "signal_delivered") == []
    late = consume(store, execution_id, "next wait", now=T0 + 53)  # still buffered
    assert late is not None and late.result == {"kind": "signal", "payload": "too late"}


# parking -------------------------------------------------------------------------------------
def test_park_on_a_sleep_records_its_timer_and_lets_go(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    assert park(store, execution_id, [NewTimer("sleep", "nap", T0 + 60)], status="sleeping",
                now=T0 + 1) == "sleeping"
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner, found.updated_at) == (
        "sleeping", None, dt(T0 + 1))
    assert store.next_due_at() == T0 + 60
    [scheduled] = audit_of(store, execution_id, "sleep_scheduled")
    assert scheduled.data == {"step_id": "nap", "due_at": iso(T0 + 60)}
    assert changes(store, execution_id)[-1] == ("running", "sleeping", "parked: sleeping")


def test_park_on_a_signal_wait_audits_the_wait(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    timers = [NewTimer("signal", "approval", T0 + 90, signal_id="approved"),
              NewTimer("signal", "forever", None, signal_id="other")]
    assert park(store, execution_id, timers, status="waiting") == "waiting"
    assert [e.data for e in audit_of(store, execution_id, "signal_waiting")] == [
        {"step_id": "approval", "signal": "approved", "timeout_at": iso(T0 + 90)},
        {"step_id": "forever", "signal": "other", "timeout_at": None},
    ]
    assert store.next_due_at() == T0 + 90


def test_park_goes_pending_when_woken_while_running_and_creates_timers_once(
        store: Any) -> None:
    execution_id = start(store)
    seen = claim(store, execution_id).wakeups
    send(store, execution_id, "unrelated", signal_id="other")  # arrives while it runs
    assert park(store, execution_id, [NewTimer("sleep", "nap", T0 + 60)], status="sleeping",
                wakeups=seen) == "pending"
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("pending", None)
    assert changes(store, execution_id)[-1] == ("running", "pending", "woken while running")
    again = claim(store, execution_id, real_now=R0 + 1)
    assert again.wakeups == seen + 1
    # the re-run asks for the same sleep with a later due time: the first one stands
    assert park(store, execution_id, [NewTimer("sleep", "nap", T0 + 999)], status="sleeping",
                wakeups=again.wakeups, now=T0 + 5) == "sleeping"
    assert len(audit_of(store, execution_id, "sleep_scheduled")) == 1
    assert store.next_due_at() == T0 + 60
    assert store.load_history(execution_id).timers == {("sleep", "nap"): T0 + 60}


def test_park_goes_pending_when_a_matching_signal_is_buffered(store: Any) -> None:
    execution_id = start(store)
    send(store, execution_id, "early")  # sent before the run looked for it
    seen = claim(store, execution_id).wakeups
    timer = NewTimer("signal", "approval", None, signal_id="approved")
    assert park(store, execution_id, [timer], status="waiting", wakeups=seen) == "pending"
    other = start(store)
    send(store, other, "early", signal_id="unrelated")
    seen = claim(store, other).wakeups
    assert park(store, other, [timer], status="waiting", wakeups=seen) == "waiting"


def test_park_needs_the_lease(store: Any) -> None:
    execution_id = start(store)
    with pytest.raises(LeaseLost):
        park(store, execution_id, [NewTimer("sleep", "nap", T0 + 1)], status="sleeping")
    claim(store, execution_id, "w1")
    with pytest.raises(LeaseLost):
        park(store, execution_id, [NewTimer("sleep", "nap", T0 + 1)], status="sleeping",
             worker="w2")
    store.cancel_execution(execution_id, reason=None, now=T0)
    with pytest.raises(ExecutionCancelled):
        park(store, execution_id, [NewTimer("sleep", "nap", T0 + 1)], status="sleeping")
    assert store.next_due_at() is None
    assert audit_of(store, execution_id, "sleep_scheduled") == []


# timers --------------------------------------------------------------------------------------
def test_a_due_sleep_records_its_step_and_claims_the_execution(store: Any) -> None:
    execution_id = sleeping(store, due=T0 + 60)
    assert fire(store, T0 + 59) == []
    assert status_of(store, execution_id) == "sleeping"
    [woken] = fire(store, T0 + 60, "w2", real_now=R0 + 5)
    assert woken.execution.execution_id == execution_id and woken.wakeups == 1
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("running", "w2")
    nap = steps_of(store, execution_id)["nap"]
    assert (nap.kind, nap.result, nap.error, nap.attempt) == ("sleep", None, None, 1)
    assert (nap.started_at, nap.completed_at) == (dt(T0), dt(T0 + 60))
    assert [e.data for e in audit_of(store, execution_id, "sleep_completed")] == [
        {"step_id": "nap"}]
    assert changes(store, execution_id)[-1] == ("sleeping", "running", "woken")
    assert store.next_due_at() is None
    assert fire(store, T0 + 120) == []
    record(store, execution_id, "after", worker="w2")  # the claim came with the lease


def test_a_due_signal_timeout_records_a_timeout_result(store: Any) -> None:
    execution_id = waiting(store, due=T0 + 30)
    [woken] = fire(store, T0 + 31)
    assert woken.execution.execution_id == execution_id
    approval = steps_of(store, execution_id)["approval"]
    assert (approval.kind, approval.result) == ("signal", {"kind": "timeout"})
    assert [e.data for e in audit_of(store, execution_id, "signal_timed_out")] == [
        {"step_id": "approval", "signal": "approved"}]


def test_a_due_retry_starts_the_next_attempt(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    error = ErrorInfo("RuntimeError", "flaky", "tb")
    assert store.schedule_retry(execution_id=execution_id, worker_id="w1", error=error,
                                due_at=T0 + 2, now=T0)
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner, found.error, found.attempt) == (
        "retrying", None, error, 1)
    assert found.status_reason is not None and "RuntimeError" in found.status_reason
    assert changes(store, execution_id)[-1][:2] == ("running", "retrying")
    assert store.next_due_at() == T0 + 2
    [woken] = fire(store, T0 + 2, "w2")
    assert woken.execution.attempt == 2
    found = store.get_execution(execution_id)
    assert (found.status, found.attempt, found.lease_owner) == ("running", 2, "w2")
    assert fire(store, T0 + 100) == []
    assert store.get_execution(execution_id).attempt == 2
    store.schedule_retry(execution_id=execution_id, worker_id="w2", error=error,
                         due_at=T0 + 104, now=T0 + 100)
    [again] = fire(store, T0 + 104, "w2")
    assert again.execution.attempt == 3
    assert store.get_execution(execution_id).attempt == 3


def test_a_new_attempt_can_wait_and_sleep_on_the_same_step_ids_again(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    park(store, execution_id, [NewTimer("sleep", "nap", T0 + 10),
                               NewTimer("signal", "approval", T0 + 100, signal_id="approved")],
         status="waiting")
    [woken] = fire(store, T0 + 10)  # the sleep is over; the wait is not
    store.schedule_retry(execution_id=execution_id, worker_id="w1",
                         error=ErrorInfo("E", "failed after the sleep"), due_at=T0 + 12,
                         now=T0 + 11)
    assert store.next_due_at() == T0 + 12  # the old wait's time-out went with the attempt
    [woken] = fire(store, T0 + 12)
    assert woken.execution.attempt == 2
    # attempt 2 replays the sleep from history and waits for the signal again
    timer = NewTimer("signal", "approval", T0 + 212, signal_id="approved")
    assert park(store, execution_id, [timer], status="waiting", wakeups=woken.wakeups,
                attempt=2, now=T0 + 12) == "waiting"
    assert store.next_due_at() == T0 + 212
    send(store, execution_id, "yes", now=T0 + 13)
    assert status_of(store, execution_id) == "pending"
    claim(store, execution_id, real_now=R0 + 1)
    got = consume(store, execution_id, "approval", attempt=2, now=T0 + 14)
    assert got is not None and got.result == {"kind": "signal", "payload": "yes"}


def test_a_slept_again_step_of_a_new_attempt_fires(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    park(store, execution_id, [NewTimer("sleep", "nap", T0 + 50),
                               NewTimer("signal", "go", None, signal_id="go")],
         status="waiting")
    send(store, execution_id, "now", signal_id="go", now=T0 + 1)
    claim(store, execution_id, real_now=R0 + 1)
    consume(store, execution_id, "go", "go", now=T0 + 2)
    store.schedule_retry(execution_id=execution_id, worker_id="w1",
                         error=ErrorInfo("E", "failed before the nap was over"),
                         due_at=T0 + 3, now=T0 + 2)
    [woken] = fire(store, T0 + 3)
    assert park(store, execution_id, [NewTimer("sleep", "nap", T0 + 60)], status="sleeping",
                wakeups=woken.wakeups, attempt=2, now=T0 + 3) == "sleeping"
    assert len(audit_of(store, execution_id, "sleep_scheduled")) == 2
    assert store.next_due_at() == T0 + 60
    [again] = fire(store, T0 + 60)
    assert again.execution.execution_id == execution_id
    nap = steps_of(store, execution_id)["nap"]
    assert (nap.kind, nap.attempt, nap.completed_at) == ("sleep", 2, dt(T0 + 60))


def test_a_sleep_that_fired_during_the_run_is_not_armed_again(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    park(store, execution_id, [NewTimer("sleep", "nap", T0 + 10),
                               NewTimer("signal", "go", None, signal_id="go")],
         status="waiting")
    send(store, execution_id, "now", signal_id="go", now=T0 + 1)
    seen = claim(store, execution_id, real_now=R0 + 1).wakeups  # history: nap still pending
    assert fire(store, T0 + 10) == []  # fires while the run goes on
    # the run, from its stale history, parks on the nap again
    assert park(store, execution_id, [NewTimer("sleep", "nap", T0 + 10)], status="sleeping",
                wakeups=seen, now=T0 + 11) == "pending"
    assert store.next_due_at() is None
    claim(store, execution_id, real_now=R0 + 2)
    assert fire(store, T0 + 20) == []
    assert len(audit_of(store, execution_id, "sleep_completed")) == 1
    assert len(audit_of(store, execution_id, "sleep_scheduled")) == 1


def test_an_execution_past_its_deadline_fails_with_reason_timeout(store: Any) -> None:
    execution_id = start(store, deadline=T0 + 100)
    claim(store, execution_id)
    park(store, execution_id, [NewTimer("sleep", "nap", T0 + 500)], status="sleeping")
    assert fire(store, T0 + 99) == []
    assert fire(store, T0 + 100) == []
    found = store.get_execution(execution_id)
    assert (found.status, found.status_reason) == ("failed", "timeout")
    assert found.error is not None and found.error.type == "TimeoutError"
    assert found.updated_at == dt(T0 + 100)
    assert changes(store, execution_id)[-1] == ("sleeping", "failed", "timeout")
    assert store.next_due_at() is None  # the sleep went with it
    assert fire(store, T0 + 500) == []
    assert "nap" not in steps_of(store, execution_id)
    with pytest.raises(ExecutionNotActive):
        send(store, execution_id)


def test_a_timed_out_running_execution_refuses_further_writes(store: Any) -> None:
    execution_id = start(store, deadline=T0 + 10)
    claim(store, execution_id)
    assert fire(store, T0 + 10, "w2") == []
    with pytest.raises(ExecutionFailed) as failed:
        record(store, execution_id, "a")
    assert failed.value.error is not None and failed.value.error.type == "TimeoutError"
    with pytest.raises(ExecutionFailed):
        finish(store, execution_id)
    assert status_of(store, execution_id) == "failed"


def test_a_woken_execution_of_a_workflow_not_loaded_here_is_queued(store: Any) -> None:
    execution_id = sleeping(store, due=T0 + 5)
    assert fire(store, T0 + 5, "w2", workflows=(OTHER_WF,)) == []
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("pending", None)
    assert changes(store, execution_id)[-1] == ("sleeping", "pending", "woken")
    assert "nap" in steps_of(store, execution_id)
    claim(store, execution_id, "w3", real_now=R0 + 1)


def test_a_timer_firing_while_the_execution_runs_counts_as_a_wakeup(store: Any) -> None:
    execution_id = waiting(store, due=T0 + 30)
    send(store, execution_id, "yes", now=T0 + 1)
    seen = claim(store, execution_id, real_now=R0 + 1).wakeups
    assert fire(store, T0 + 30) == []  # running: recorded, not claimed again
    assert steps_of(store, execution_id)["approval"].result == {"kind": "timeout"}
    assert park(store, execution_id, [NewTimer("sleep", "nap", T0 + 99)], status="sleeping",
                wakeups=seen, now=T0 + 31) == "pending"


def test_fire_due_timers_respects_its_limit(store: Any) -> None:
    ids = [sleeping(store, due=T0 + i) for i in range(1, 4)]
    first = fire(store, T0 + 10, limit=2)
    assert [c.execution.execution_id for c in first] == ids[:2]
    second = fire(store, T0 + 10, limit=2)
    assert [c.execution.execution_id for c in second] == ids[2:]


def test_only_one_of_two_workers_fires_a_timer(env: StoreEnv) -> None:
    one, two = env.open(), env.open()
    ids = [sleeping(one, due=T0 + 60) for _ in range(5)]
    first, second = in_threads(lambda: fire(one, T0 + 60, "w1"),
                               lambda: fire(two, T0 + 60, "w2", real_now=R0 + 1))
    claimed = [c.execution.execution_id for c in first + second]
    assert sorted(claimed) == sorted(ids)
    for execution_id in ids:
        assert len(audit_of(one, execution_id, "sleep_completed")) == 1
        owner = "w1" if execution_id in [c.execution.execution_id for c in first] else "w2"
        assert one.get_execution(execution_id).lease_owner == owner


def test_next_due_at_is_the_earliest_pending_timer(store: Any) -> None:
    assert store.next_due_at() is None
    waiting(store, due=None)
    assert store.next_due_at() is None
    sleeping(store, due=T0 + 70)
    sleeping(store, due=T0 + 40)
    assert store.next_due_at() == T0 + 40
    fire(store, T0 + 40)
    assert store.next_due_at() == T0 + 70


# finishing and cancelling --------------------------------------------------------------------
def test_finish_completes_with_a_result_and_drops_the_lease(store: Any) -> None:
    execution_id = start(store, deadline=T0 + 1000)
    claim(store, execution_id)
    assert finish(store, execution_id, result_json='{"status": "done"}', now=T0 + 7)
    found = store.get_execution(execution_id)
    assert (found.status, found.result, found.error, found.lease_owner) == (
        "completed", {"status": "done"}, None, None)
    assert found.updated_at == dt(T0 + 7) and not found.is_active
    assert changes(store, execution_id)[-1] == ("running", "completed", None)
    assert store.next_due_at() is None  # the deadline timer is gone
    with pytest.raises(DurableError):
        finish(store, execution_id)


def test_finish_failed_keeps_the_error_and_reason(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    error = ErrorInfo("KeyError", "'sku'", "Traceback (most recent call last): ...")
    finish(store, execution_id, status="failed", error=error, reason="KeyError: 'sku'")
    found = store.get_execution(execution_id)
    assert (found.status, found.status_reason, found.error) == (
        "failed", "KeyError: 'sku'", error)
    assert changes(store, execution_id)[-1] == ("running", "failed", "KeyError: 'sku'")


def test_finish_and_schedule_retry_need_the_lease(store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id, "w1")
    with pytest.raises(LeaseLost):
        finish(store, execution_id, worker="w2")
    with pytest.raises(LeaseLost):
        store.schedule_retry(execution_id=execution_id, worker_id="w2",
                             error=ErrorInfo("E", "m"), due_at=T0 + 1, now=T0)
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("running", "w1")
    assert store.next_due_at() is None
    store.cancel_execution(execution_id, reason=None, now=T0)
    with pytest.raises(ExecutionCancelled):
        finish(store, execution_id)
    with pytest.raises(ExecutionCancelled):
        store.schedule_retry(execution_id=execution_id, worker_id="w1",
                             error=ErrorInfo("E", "m"), due_at=T0 + 1, now=T0)


def test_cancel_a_parked_execution_at_once(store: Any) -> None:
    execution_id = sleeping(store, due=T0 + 60)
    cancelled = store.cancel_execution(execution_id, reason="customer left", now=T0 + 1)
    assert cancelled.execution_id == execution_id
    assert (cancelled.status, cancelled.status_reason) == ("cancelled", "customer left")
    assert store.get_execution(execution_id).status == "cancelled"
    assert changes(store, execution_id)[-1] == ("sleeping", "cancelled", "customer left")
    assert store.next_due_at() is None
    assert fire(store, T0 + 60) == []
    assert store.list_step_results(execution_id) == []
    with pytest.raises(ExecutionNotActive) as again:
        store.cancel_execution(execution_id, reason=None, now=T0 + 2)
    assert again.value.status == "cancelled"
    with pytest.raises(ExecutionNotFound):
        store.cancel_execution("unknown", reason=None, now=T0)


def test_cancel_without_a_reason_says_cancelled(store: Any) -> None:
    execution_id = start(store)
    assert store.cancel_execution(execution_id, reason=None, now=T0).status_reason == (
        "cancelled")
    done = start(store)
    claim(store, done)
    finish(store, done)
    with pytest.raises(ExecutionNotActive):
        store.cancel_execution(done, reason=None, now=T0)


# leases and workers --------------------------------------------------------------------------
def test_heartbeat_extends_only_this_workers_leases(store: Any) -> None:
    mine = [start(store), start(store)]
    for execution_id in mine:
        claim(store, execution_id, "w1", real_now=R0)
    theirs = start(store)
    claim(store, theirs, "w2", real_now=R0)
    assert store.heartbeat(worker_id="w1", real_now=R0 + 20, lease_until=R0 + 50) == 2
    later = R0 + LEASE + 5  # past the first leases, within the renewed ones
    for execution_id in mine:
        assert store.claim_execution(execution_id, worker_id="w3", workflow_ids=[WF], now=T0,
                                     real_now=later, lease_until=later + LEASE) is None
    assert store.claim_execution(theirs, worker_id="w3", workflow_ids=[WF], now=T0,
                                 real_now=later, lease_until=later + LEASE) is not None
    assert store.heartbeat(worker_id="nobody", real_now=R0, lease_until=R0 + 50) == 0


def test_register_worker_holds_its_id(env: StoreEnv) -> None:
    one, two = env.open(), env.open()
    one.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
    [info] = two.live_workers()
    assert (info.worker_id, info.pid, info.hostname) == ("w1", os.getpid(), "box")
    assert info.started_at == dt(R0)
    assert [w.worker_id for w in two.list_workers()] == ["w1"]
    with pytest.raises(StorageError):
        two.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
    assert [w.worker_id for w in one.live_workers()] == ["w1"]
    one.unregister_worker("w1")
    assert two.list_workers() == [] and two.live_workers() == []
    two.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0 + 1)
    assert [w.worker_id for w in one.live_workers()] == ["w1"]


def test_unregister_worker_frees_its_leases(store: Any) -> None:
    store.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
    execution_id = start(store)
    claim(store, execution_id, "w1")
    store.unregister_worker("w1")
    assert store.get_execution(execution_id).lease_owner is None
    claim(store, execution_id, "w2", real_now=R0 + 1)


def test_reap_leaves_live_workers_alone(env: StoreEnv) -> None:
    one, two = env.open(), env.open()
    one.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
    execution_id = start(one)
    claim(one, execution_id, "w1")
    assert two.reap_dead_workers(real_now=R0 + 1) == 0
    assert one.get_execution(execution_id).lease_owner == "w1"
    assert [w.worker_id for w in two.list_workers()] == ["w1"]


def test_a_closed_workers_leases_are_freed_by_reap(env: StoreEnv) -> None:
    gone, survivor = env.open(), env.open()
    gone.register_worker(worker_id="gone", pid=os.getpid(), hostname="box", real_now=R0)
    survivor.register_worker(worker_id="alive", pid=os.getpid(), hostname="box", real_now=R0)
    execution_id = start(gone)
    claim(gone, execution_id, "gone")
    raw(gone).close()  # the lock goes with it, as it would with the process
    assert [w.worker_id for w in survivor.live_workers()] == ["alive"]
    assert survivor.reap_dead_workers(real_now=R0 + 1) == 1
    assert survivor.get_execution(execution_id).lease_owner is None
    assert [w.worker_id for w in survivor.list_workers()] == ["alive"]
    claim(survivor, execution_id, "alive", real_now=R0 + 1)  # long before the lease ran out


CHILD = """
import os, sys
{open_code}
store.register_worker(worker_id="doomed", pid=os.getpid(), hostname="child", real_now={r0})
found = store.claim_execution(sys.argv[1], worker_id="doomed", workflow_ids=[{wf!r}],
                              now={t0}, real_now={r0}, lease_until={r0} + 3600)
print("claimed" if found else "missed", flush=True)
sys.stdin.read()  # hold the lock until killed
"""


def test_reap_frees_the_leases_of_a_worker_killed_with_sigkill(env: StoreEnv,
                                                                store: Any) -> None:
    execution_id = start(store)
    code = CHILD.format(open_code=env.backend.child_code, r0=R0, t0=T0, wf=WF)
    child = subprocess.Popen(
        [sys.executable, "-c", code, execution_id], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = child.stdout.readline().strip() if child.stdout else ""
        assert line == "claimed", child.stderr.read() if child.stderr else line
        assert [w.worker_id for w in store.live_workers()] == ["doomed"]
        assert store.reap_dead_workers(real_now=R0 + 1) == 0
        assert store.get_execution(execution_id).lease_owner == "doomed"
        store.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
        assert store.claim_execution(execution_id, worker_id="w1", workflow_ids=[WF], now=T0,
                                     real_now=R0 + 1, lease_until=R0 + LEASE) is None
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert [w.worker_id for w in store.live_workers()] == ["w1"]
    assert store.reap_dead_workers(real_now=R0 + 2) == 1
    assert [w.worker_id for w in store.list_workers()] == ["w1"]
    found = store.get_execution(execution_id)
    assert (found.status, found.lease_owner) == ("running", None)
    claim(store, execution_id, "w1", real_now=R0 + 2)  # the lease had an hour to go
    assert store.reap_dead_workers(real_now=R0 + 3) == 0


def test_reap_frees_leases_held_by_no_registered_worker(store: Any) -> None:
    store.register_worker(worker_id="w1", pid=os.getpid(), hostname="box", real_now=R0)
    registered, orphan = start(store), start(store)
    claim(store, registered, "w1")
    claim(store, orphan, "never-registered")
    assert store.reap_dead_workers(real_now=R0 + 1) == 1
    assert store.get_execution(registered).lease_owner == "w1"
    assert store.get_execution(orphan).lease_owner is None


def test_record_workflows_and_known_workflows(store: Any) -> None:
    assert store.known_workflows() == {}
    store.record_workflows(worker_id="w1", workflows=[(WF, "orders"), (OTHER_WF, None)],
                           now=T0)
    assert store.known_workflows() == {WF: "orders", OTHER_WF: None}
    store.record_workflows(worker_id="w2", workflows=[(WF, "orders.main")], now=T0 + 1)
    assert store.known_workflows() == {WF: "orders.main", OTHER_WF: None}


# audit and commit listeners ------------------------------------------------------------------
def test_audit_entries_come_in_seq_order_with_limit_and_offset(store: Any) -> None:
    one, two = start(store), start(store)
    claim(store, one)
    claim(store, two)
    record(store, one, "a", audit_entries=(("note", {"message": "hi", "meta": None}),))
    finish(store, one)
    entries = audit_of(store, one)
    assert [e.kind for e in entries] == [
        "execution_status_changed", "execution_status_changed", "note",
        "execution_status_changed"]
    seqs = [e.seq for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(e.execution_id == one for e in entries)
    # seq is global: the other execution's entries fall between
    assert any(seqs[0] < e.seq < seqs[-1] for e in audit_of(store, two))
    assert store.list_audit_entries(one, limit=2) == entries[:2]
    assert store.list_audit_entries(one, limit=2, offset=1) == entries[1:3]
    assert store.list_audit_entries(one, offset=3) == entries[3:]


def test_commit_listeners_get_the_entries_after_the_commit(env: StoreEnv, store: Any) -> None:
    reader = env.open()
    calls: list[list[AuditEntry]] = []
    visible: list[bool] = []

    def listener(entries: list[AuditEntry]) -> None:
        calls.append(list(entries))
        # another connection sees them: the transaction has committed
        for entry in entries:
            assert entry.execution_id is not None
            visible.append(entry in reader.list_audit_entries(entry.execution_id))

    remove = store.add_commit_listener(listener)
    execution_id = start(store)
    claim(store, execution_id)
    eventually(lambda: len(visible) == 2)  # a listener may run just after the write returns
    assert [e.data["to"] for batch in calls for e in batch] == ["pending", "running"]
    assert visible == [True, True]
    stored = audit_of(store, execution_id)
    assert [e for batch in calls for e in batch] == stored
    remove()
    finish(store, execution_id)
    assert len([e for batch in calls for e in batch]) == 2


def test_commit_listeners_hear_of_entries_even_with_audit_off(store: Any) -> None:
    heard: list[AuditEntry] = []
    store.add_commit_listener(heard.extend)
    execution_id = start(store, audit=False)
    eventually(lambda: heard)
    assert audit_of(store, execution_id) == []
    assert [(e.kind, e.execution_id, e.data["to"]) for e in heard] == [
        ("execution_status_changed", execution_id, "pending")]


def test_a_listener_that_does_not_want_entries_hears_none_until_it_does(store: Any) -> None:
    heard: list[AuditEntry] = []
    wanted = {"now": False}
    store.add_commit_listener(heard.extend, wanted=lambda: wanted["now"])
    always: list[AuditEntry] = []
    store.add_commit_listener(always.extend)
    first = start(store)
    eventually(lambda: always)
    assert heard == []
    wanted["now"] = True
    second = start(store)
    eventually(lambda: heard)
    assert [(e.execution_id, e.data["to"]) for e in heard] == [(second, "pending")]
    assert [e.execution_id for e in always] == [first, second]


def test_a_failing_listener_does_not_break_the_write(store: Any) -> None:
    heard: list[AuditEntry] = []

    def broken(entries: list[AuditEntry]) -> None:
        raise RuntimeError("listener bug")

    store.add_commit_listener(broken)
    store.add_commit_listener(heard.extend)
    execution_id = start(store)
    assert status_of(store, execution_id) == "pending"
    eventually(lambda: heard)
    assert len(heard) == 1


def test_a_refused_write_announces_nothing(store: Any) -> None:
    execution_id = start(store)
    heard: list[AuditEntry] = []
    store.add_commit_listener(heard.extend)
    with pytest.raises(LeaseLost):
        record(store, execution_id, "a", audit_entries=(("note", {"message": "x"}),))
    later = start(store)  # listeners hear of commits in order: once this is heard, all is
    eventually(lambda: any(e.execution_id == later for e in heard))
    assert [e for e in heard if e.kind == "note"] == []
    assert audit_of(store, execution_id, "note") == []


def test_a_failing_job_among_grouped_writes_rolls_back_alone(store: Any) -> None:
    target = start(store)
    claim(store, target, "w1")
    grouped = raw(store)
    heard: list[AuditEntry] = []
    grouped.add_commit_listener(heard.extend)

    def create(execution_id: str) -> Any:
        return grouped.submit(grouped.create_execution, execution_id=execution_id,
                              workflow_id=WF, input_json=None, max_attempts=3,
                              retry_backoff=2.0, now=T0)

    futures = [
        create("ex-before"),
        grouped.submit(grouped.record_step, execution_id=target, worker_id="w2",
                       step_id="stolen", kind="step", result_json="1", error=None, attempt=1,
                       started_at=T0, completed_at=T0, now=T0,
                       audit_entries=(("note", {"message": "x"}),)),
        grouped.submit(grouped.record_step, execution_id=target, worker_id="w1",
                       step_id="mine", kind="step", result_json="2", error=None, attempt=1,
                       started_at=T0, completed_at=T0, now=T0),
        create("ex-after"),
    ]
    assert futures[0].result(timeout=10) == ("ex-before", True)
    with pytest.raises(LeaseLost):
        futures[1].result(timeout=10)
    assert futures[2].result(timeout=10) >= 1
    assert futures[3].result(timeout=10) == ("ex-after", True)
    eventually(lambda: {"ex-before", "ex-after"} <= {e.execution_id for e in heard})
    assert store.get_execution("ex-before") is not None
    assert store.get_execution("ex-after") is not None
    assert list(steps_of(store, target)) == ["mine"]
    assert audit_of(store, target, "note") == []
    assert [e for e in heard if e.kind == "note"] == []


def test_data_version_moves_when_another_store_commits(env: StoreEnv, store: Any) -> None:
    other = env.open()
    before = store.data_version()
    assert store.data_version() == before
    start(other)
    assert store.data_version() != before


# signal_and_claim: a worker's own signal claims the execution it wakes -----------------------
def _signal_and_claim(store: Any, execution_id: str, *, signal_id: str = "approved",
                      workflows: tuple[str, ...] = (WF,)) -> tuple[int, Claim | None]:
    seq, found = store.signal_and_claim(
        execution_id=execution_id, signal_id=signal_id, payload_json='{"ok":true}', now=T0,
        worker_id="w1", workflow_ids=list(workflows), lease_until=R0 + LEASE)
    return int(seq), found


def test_signal_and_claim_claims_the_waiting_execution_it_wakes(store: Any) -> None:
    execution_id = waiting(store)
    seq, found = _signal_and_claim(store, execution_id)
    assert seq == 1 and found is not None
    assert found.execution.status == "running" and found.execution.lease_owner == "w1"
    assert status_of(store, execution_id) == "running"
    assert changes(store, execution_id)[-1] == ("waiting", "running", "signal approved")
    # the signal is buffered for the wait to consume, exactly once
    assert consume(store, execution_id, "approval") is not None


def test_signal_and_claim_leaves_other_workers_executions_pending(store: Any) -> None:
    execution_id = waiting(store)
    seq, found = _signal_and_claim(store, execution_id, workflows=("other.v1",))
    assert (seq, found) == (1, None)
    assert status_of(store, execution_id) == "pending"


def test_signal_and_claim_does_not_claim_an_execution_that_waits_for_something_else(
        store: Any) -> None:
    execution_id = waiting(store, signal_id="shipped")
    assert _signal_and_claim(store, execution_id) == (1, None)
    assert status_of(store, execution_id) == "waiting"
    sleeper = sleeping(store)
    assert _signal_and_claim(store, sleeper) == (1, None)
    assert status_of(store, sleeper) == "sleeping"
    with pytest.raises(ExecutionNotFound):
        _signal_and_claim(store, "missing")


# operator repairs ----------------------------------------------------------------------------
OP = {"actor": "ann", "reason": "why", "now": T0 + 100}


def failed_with(store: Any, *steps: tuple[str, str | None, ErrorInfo | None]) -> str:
    """A failed execution with these (step id, result, error) steps, recorded in this order."""
    execution_id = start(store)
    claim(store, execution_id)
    for number, (step_id, result_json, error) in enumerate(steps):
        record(store, execution_id, step_id, result_json=result_json, error=error,
               now=T0 + number)
    assert finish(store, execution_id, status="failed", error=ErrorInfo("E", "boom"))
    return execution_id


def operator_entries(store: Any, execution_id: str) -> list[dict[str, Any]]:
    return [e.data for e in audit_of(store, execution_id, "operator_action")]


def test_retry_execution_makes_a_failed_execution_pending_as_a_new_attempt(store: Any) -> None:
    execution_id = failed_with(store, ("a", '"A"', None), ("b", None, ErrorInfo("E", "boom")))
    found = store.retry_execution(execution_id, **OP)
    assert (found.status, found.attempt, found.max_attempts, found.error, found.lease_owner) == (
        "pending", 2, 3, None, None)
    assert operator_entries(store, execution_id) == [
        {"action": "retry", "actor": "ann", "reason": "why", "step_id": None}]
    assert changes(store, execution_id)[-1] == ("failed", "pending", "operator retry by ann: why")
    assert set(steps_of(store, execution_id)) == {"a", "b"}  # history untouched
    taken = claim(store, execution_id, now=T0 + 101)
    assert taken.execution.attempt == 2
    with pytest.raises(ExecutionStateError) as refused:
        store.retry_execution(execution_id, **OP)
    assert (refused.value.action, refused.value.status) == ("retry", "running")


def test_retry_rollback_deletes_the_failed_compensation_and_keeps_the_attempt(
        store: Any) -> None:
    execution_id = start(store)
    claim(store, execution_id)
    record(store, execution_id, "a", result_json='"A"')
    record(store, execution_id, "rollback:a", kind="rollback", result_json=None,
           error=ErrorInfo("E", "offline"))
    assert finish(store, execution_id, status="compensation_failed",
                  error=ErrorInfo("E", "offline"))
    found = store.retry_rollback(execution_id, **OP)
    assert (found.status, found.attempt, found.error) == ("pending", 1, None)
    assert set(steps_of(store, execution_id)) == {"a"}
    assert operator_entries(store, execution_id)[0]["step_id"] == "rollback:a"
    # a cached history notices the row that went: the step count disagrees
    assert store.load_history(execution_id).step_count == 1


def test_skip_step_settles_a_wait_with_a_new_seq_and_wakes_the_execution(store: Any) -> None:
    execution_id = waiting(store, due=T0 + 3600)
    before = store.load_history(execution_id)
    found = store.skip_step(execution_id, "approval", value_json='{"by":"ops"}', **OP)
    assert found.status == "pending"
    step = steps_of(store, execution_id)["approval"]
    assert (step.kind, step.result, step.error) == (
        "signal", {"kind": "signal", "payload": {"by": "ops"}}, None)
    assert step.seq > before.max_seq
    assert store.load_history(execution_id).timers == {}  # its time-out no longer fires
    assert fire(store, T0 + 7200) == []
    assert operator_entries(store, execution_id) == [
        {"action": "skip-step", "actor": "ann", "reason": "why", "step_id": "approval",
         "value": {"by": "ops"}}]


def test_skip_step_of_a_failed_step_resumes_a_failed_execution(store: Any) -> None:
    execution_id = failed_with(store, ("a", '"A"', None), ("b", None, ErrorInfo("E", "boom")))
    found = store.skip_step(execution_id, "b", value_json="5", **OP)
    assert (found.status, found.attempt) == ("pending", 2)
    step = steps_of(store, execution_id)["b"]
    assert (step.result, step.error, step.attempt) == (5, None, 2)


def test_edit_step_result_renumbers_the_step_and_those_after_it_in_order(store: Any) -> None:
    execution_id = failed_with(store, ("a", '"A"', None), ("b", '"B"', None),
                               ("c", None, ErrorInfo("E", "boom")))
    cached = store.load_history(execution_id)
    found = store.edit_step_result(execution_id, "a", value_json='"A2"', **OP)
    assert found.status == "failed"
    delta = store.load_history(execution_id, after_seq=cached.max_seq)
    assert set(delta.steps) == {"a", "b", "c"} and delta.step_count == 3
    assert delta.steps["a"].result == "A2"
    assert [s.step_id for s in store.list_step_results(execution_id)] == ["a", "b", "c"]
    [entry] = operator_entries(store, execution_id)
    assert (entry["value"], entry["previous"]) == ("A2", "A")
    with pytest.raises(StepIdError):
        store.edit_step_result(execution_id, "nope", value_json="1", **OP)


def test_force_fail_fails_an_active_execution_and_cancels_its_timers(store: Any) -> None:
    execution_id = sleeping(store)
    found = store.force_fail(execution_id, message="customer left", **OP)
    assert (found.status, found.status_reason) == ("failed", "force-failed: why")
    assert found.error == ErrorInfo("ForceFailed", "customer left")
    assert fire(store, T0 + 3600) == [] and status_of(store, execution_id) == "failed"
    with pytest.raises(ExecutionStateError):
        store.force_fail(execution_id, message="again", **OP)


def test_fork_execution_copies_the_steps_before_the_step_into_a_new_execution(
        store: Any) -> None:
    execution_id = failed_with(store, ("a", '"A"', None), ("b", '"B"', None),
                               ("c", None, ErrorInfo("E", "boom")))
    fork = store.fork_execution(execution_id, "c", new_execution_id="fork-1", **OP)
    assert (fork.execution_id, fork.status, fork.attempt, fork.workflow_id) == (
        "fork-1", "pending", 1, WF)
    assert fork.forked_from == {"execution_id": execution_id, "step_id": "c"}
    copied = store.list_step_results("fork-1")
    assert [(s.step_id, s.result, s.attempt, s.seq) for s in copied] == [
        ("a", "A", 1, 1), ("b", "B", 1, 2)]
    assert status_of(store, execution_id) == "failed"
    assert operator_entries(store, execution_id)[0]["fork"] == "fork-1"
    assert claim(store, "fork-1").has_history
    with pytest.raises(StepIdError):
        store.fork_execution(execution_id, "nope", new_execution_id="fork-2", **OP)
    with pytest.raises(ExecutionNotFound):
        store.fork_execution("missing", "a", new_execution_id="fork-3", **OP)


def test_list_stuck_executions(store: Any) -> None:
    failed = failed_with(store)
    ghost = start(store, workflow="ghost.v1")
    store.mark_unloaded(workflow_ids=[WF], reason_prefix="workflow not loaded: ")
    start(store)  # pending, its workflow loaded: not stuck
    assert {e.execution_id for e in store.list_stuck_executions()} == {failed, ghost}
    assert len(store.list_stuck_executions(limit=1)) == 1

