"""Listing by several statuses merges per-status index scans (``--status finished`` on a
million executions answered in milliseconds, not seconds) and must page exactly like one
sorted query."""

from __future__ import annotations

import random
import sqlite3

from durablectl import SqliteStore

STATUSES = ["completed", "failed", "cancelled", "running"]


def _fill(store: SqliteStore, n: int) -> None:
    rng = random.Random(7)
    for i in range(n):
        store.create_execution(execution_id=f"e{i:04d}", workflow_id=rng.choice(["a", "b"]),
                               input_json=None, max_attempts=1, retry_backoff=2.0,
                               now=1_700_000_000.0 + rng.randrange(50))  # many equal times
    with sqlite3.connect(store.path) as conn:
        conn.executemany("UPDATE executions SET status = ? WHERE execution_id = ?",
                         [(rng.choice(STATUSES), f"e{i:04d}") for i in range(n)])


def test_several_statuses_page_like_one_sorted_query(store: SqliteStore) -> None:
    _fill(store, 300)
    with store.raw_read() as conn:
        for statuses, workflow in ((["completed", "failed"], None), (STATUSES, "a"),
                                   (["failed", "failed", "cancelled"], "b")):
            for limit, offset in ((10, 0), (25, 40), (100, 250), (0, 0)):
                marks = ",".join("?" * len(statuses))
                extra = " AND workflow_id = ?" if workflow else ""
                expected = [row[0] for row in conn.execute(
                    f"SELECT execution_id FROM executions WHERE status IN ({marks}){extra}"
                    " ORDER BY created_at DESC, execution_id DESC LIMIT ? OFFSET ?",
                    [*statuses, *([workflow] if workflow else []), limit, offset])]
                found = store.list_executions(status=statuses, workflow=workflow,
                                              limit=limit, offset=offset)
                assert [e.execution_id for e in found] == expected, (statuses, offset)
        for workflow in ("a", "b"):  # one workflow, any status: merged per status as well
            for limit, offset in ((10, 0), (25, 40), (100, 120)):
                expected = [row[0] for row in conn.execute(
                    "SELECT execution_id FROM executions WHERE workflow_id = ?"
                    " ORDER BY created_at DESC, execution_id DESC LIMIT ? OFFSET ?",
                    (workflow, limit, offset))]
                found = store.list_executions(workflow=workflow, limit=limit, offset=offset)
                assert [e.execution_id for e in found] == expected, (workflow, offset)


def test_the_merged_list_and_the_prune_scan_use_the_status_index(store: SqliteStore) -> None:
    _fill(store, 20)
    with store.raw_read() as conn:
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT execution_id FROM executions WHERE status = ?"
            " ORDER BY created_at DESC, execution_id DESC LIMIT 5", ("failed",)))
        assert "executions_status" in plan and "SCAN executions" not in plan
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT execution_id FROM executions WHERE status IN (?, ?)"
            " AND created_at < ? AND updated_at < ? LIMIT 5", ("completed", "failed", 1, 1)))
        assert "executions_status (status=? AND created_at<?)" in plan
