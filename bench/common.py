"""Shared pieces of the benchmark: results, statistics, stores, self-checks and diagnostics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from durablectl import DurableService, SqliteStore, durable_events
from durablectl.events import DurableEventRecord

SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class _Any:
    """Matches any stored value (for step results that are timestamps)."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


@dataclass
class Result:
    """What one workload measured and whether it checked out."""

    name: str
    figures: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    checked: int = 0  # executions whose result and step rows were verified

    @property
    def verified(self) -> bool:
        return not self.problems and self.checked > 0

    def to_json(self) -> dict[str, Any]:
        return {"figures": {k: _round(v) for k, v in self.figures.items()},
                "verified": self.verified, "checked_executions": self.checked,
                "problems": self.problems[:20], "problem_count": len(self.problems),
                "notes": self.notes, "diagnostics": self.diagnostics}


def _round(value: float) -> float:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value


# statistics ----------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# stores and services -------------------------------------------------------------------------
def open_store(folder: Path, name: str, synchronous: str) -> SqliteStore:
    return SqliteStore(folder / f"{name}.db", synchronous=synchronous)


def read_pragmas(store: SqliteStore) -> dict[str, Any]:
    sync = store.pragma("synchronous")
    return {"journal_mode": str(store.pragma("journal_mode")).lower(),
            "synchronous": SYNCHRONOUS_NAMES.get(int(sync), str(sync)),
            "busy_timeout": int(store.pragma("busy_timeout"))}


def check_pragmas(result: Result, store: SqliteStore, synchronous: str) -> None:
    """Check the pragmas in force; a workload with passes at several levels keeps each one's
    (``pragmas``, then ``pragmas_normal`` and so on)."""
    pragmas = read_pragmas(store)
    key = "pragmas"
    if key in result.diagnostics and result.diagnostics[key] != pragmas:
        key = f"pragmas_{synchronous.lower()}"
    result.diagnostics[key] = pragmas
    if pragmas["journal_mode"] != "wal":
        result.problems.append(f"journal_mode is {pragmas['journal_mode']}, not wal")
    if pragmas["synchronous"] != synchronous:
        result.problems.append(f"synchronous is {pragmas['synchronous']}, not {synchronous}")
    if pragmas["busy_timeout"] <= 0:
        result.problems.append("busy_timeout is not set")


class CommitCounter:
    """Diagnostics only: counts the store's commits (grouped batches) and the jobs in them by
    wrapping the writer's batch method on this store instance. Optional: if the store has no
    such method, the counts stay unavailable and nothing else changes."""

    def __init__(self, store: SqliteStore) -> None:
        self.commits = 0
        self.jobs = 0
        original = getattr(store, "_run_batch", None)
        self.available = callable(original)
        if not self.available:
            return
        assert original is not None

        def counted(batch: list[Any], **options: Any) -> Any:
            ran = original(batch, **options)
            if ran is not False:  # False: not run (the write lock was taken; it goes on)
                self.commits += 1
                self.jobs += len(batch)
            return ran

        store._run_batch = counted  # type: ignore[method-assign]

    def snapshot(self) -> tuple[int, int]:
        return self.commits, self.jobs

    def since(self, mark: tuple[int, int]) -> dict[str, Any]:
        if not self.available:
            return {}
        commits, jobs = self.commits - mark[0], self.jobs - mark[1]
        return {"commits": commits, "write_jobs": jobs,
                "jobs_per_commit": round(jobs / commits, 2) if commits else None}


FINISHED = frozenset({"completed", "failed", "compensation_failed", "cancelled"})


class StatusWatch:
    """Follows status changes from the service's durable events (delivered after the commit),
    so a driver can wait for "parked again" or "all finished" without polling the store and
    without one waiting task per execution (which would load the loop it measures)."""

    def __init__(self, service: DurableService) -> None:
        self.counts: Counter[tuple[str | None, str | None]] = Counter()
        self.finished: dict[str, float] = {}  # execution id -> perf_counter when seen finished
        self._event = asyncio.Event()
        self._pending: set[str] = set()
        self._all_done = asyncio.Event()
        self.unsubscribe = service.on(durable_events.execution_status_changed, self._on)

    def _on(self, record: DurableEventRecord) -> None:
        to = record.data.get("to")
        self.counts[(record.execution_id, to)] += 1
        if to in FINISHED and record.execution_id is not None:
            self.finished.setdefault(record.execution_id, time.perf_counter())
            self._pending.discard(record.execution_id)
            if not self._pending:
                self._all_done.set()
        self._event.set()

    async def all_finished(self, execution_ids: Sequence[str], timeout: float) -> None:
        self._pending = {eid for eid in execution_ids if eid not in self.finished}
        if not self._pending:
            return
        self._all_done.clear()
        try:
            await asyncio.wait_for(self._all_done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{len(self._pending)} executions did not finish within "
                               f"{timeout:g}s") from None

    async def reach(self, execution_id: str, status: str, count: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.counts[(execution_id, status)] < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"execution {execution_id} did not reach {status!r} "
                                   f"{count} times within {timeout:g}s")
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)


# self-checks ---------------------------------------------------------------------------------
def verify_execution(store: SqliteStore, execution_id: str, *, result: Any,
                     steps: Mapping[str, tuple[str, Any]],
                     check_result: Callable[[Any], str | None] | None = None) -> list[str]:
    """Problems with one execution: it must be completed with ``result`` (ANY: not compared;
    ``check_result`` may add a check) and have exactly the step rows ``steps`` (id -> (kind,
    result)), each without an error."""
    problems: list[str] = []
    execution = store.get_execution(execution_id)
    if execution is None:
        return [f"{execution_id}: execution not found"]
    if execution.status != "completed":
        reason = execution.error.message if execution.error else execution.status_reason
        problems.append(f"{execution_id}: status {execution.status} ({reason})")
    elif result is not ANY and execution.result != result:
        problems.append(f"{execution_id}: result {execution.result!r} != {result!r}")
    if check_result is not None and execution.status == "completed":
        found = check_result(execution.result)
        if found:
            problems.append(f"{execution_id}: {found}")
    rows = {row.step_id: row for row in store.list_step_results(execution_id)}
    missing = [sid for sid in steps if sid not in rows]
    extra = [sid for sid in rows if sid not in steps]
    if missing:
        problems.append(f"{execution_id}: {len(missing)} step rows missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{execution_id}: unexpected step rows {extra[:3]}")
    for step_id, (kind, value) in steps.items():
        row = rows.get(step_id)
        if row is None:
            continue
        if row.kind != kind:
            problems.append(f"{execution_id}: step {step_id} has kind {row.kind}, not {kind}")
        if row.error is not None:
            problems.append(f"{execution_id}: step {step_id} failed: {row.error.message}")
        elif value is not ANY and row.result != value:
            problems.append(f"{execution_id}: step {step_id} result {row.result!r} != "
                            f"{value!r}")
    return problems


def iso_timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def sleep_due(store: SqliteStore, execution_id: str, step_id: str) -> tuple[float, float] | None:
    """The due time of a sleep (from its ``sleep_scheduled`` audit entry) and when it was
    recorded, as epoch seconds."""
    for entry in store.list_audit_entries(execution_id):
        if entry.kind == "sleep_scheduled" and entry.data.get("step_id") == step_id:
            return iso_timestamp(str(entry.data["due_at"])), entry.at.timestamp()
    return None
