"""Large databases for the scale and retention workloads, built from real executions.

A few thousand executions run through a real ``DurableService`` (audit on, mixed outcomes:
completed three-step runs, failures, signal waits), so every row has the shape the engine
writes. :func:`multiply` then copies them in SQL (``INSERT ... SELECT``) under fresh execution
ids, each copy shifted back in time, up to a million executions in a minute or two. Running a
million executions through the engine would take far longer and measure nothing more.

The copies are written on a connection of their own with ``synchronous = OFF``: they are the
benchmark's fixture, not a durability claim. Everything measured afterwards opens the file
through ``SqliteStore`` with the synchronous setting under test.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import Result, StatusWatch, open_store
from bench.workloads import three_steps  # the W1 workflow: the same rows per execution
from durablectl import DurableService, Signal, workflow

GO = Signal("bench.scale.go")
# columns holding timestamps: shifted back with each copy
_TIME_COLUMNS = frozenset({"created_at", "updated_at", "started_at", "completed_at",
                           "consumed_at", "due_at", "at", "deadline", "lease_until"})
# tables whose rows belong to an execution, copied with it (parent first)
_TABLES = ("executions", "steps", "signals", "timers", "audit")
_ORDER = {"executions": "", "steps": ", t.seq", "signals": ", t.signal_id, t.seq",
          "timers": ", t.timer_id", "audit": ", t.seq"}


def _boom(i: int) -> None:
    raise RuntimeError(f"payment {i} declined")


@workflow("bench.scale.fails", max_attempts=1)
async def fails(ctx: Any, data: dict[str, Any]) -> None:
    await ctx.step("reserve", lambda: data["i"])
    await ctx.step("charge", lambda: _boom(data["i"]))


@workflow("bench.scale.signalled")
async def signalled(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    got = await ctx.wait_for_signal(GO, step_id="approval", timeout=3600)
    by = got.payload["by"] if got.kind == "signal" else None
    done = await ctx.step("ship", lambda: {"i": data["i"], "by": by})
    return {"shipped": done}


WORKFLOWS = [three_steps, fails, signalled]


def kind_of(i: int, mixed: bool) -> str:
    """Seven in ten complete in three steps, two fail, one waits for a signal."""
    if not mixed:
        return "three"
    return {7: "fails", 8: "fails", 9: "signalled"}.get(i % 10, "three")


async def run_executions(store: Any, n: int, *, mixed: bool, timeout: float,
                         result: Result) -> list[str]:
    """Run ``n`` executions to the end through a real service and check their outcomes."""
    refs = {"three": three_steps, "fails": fails, "signalled": signalled}
    async with DurableService(store, WORKFLOWS) as service:
        watch = StatusWatch(service)
        kinds = [kind_of(i, mixed) for i in range(n)]
        ids = list(await asyncio.gather(*(service.start_execution(refs[k], {"i": i})
                                          for i, k in enumerate(kinds))))
        await asyncio.gather(*(service.signal(eid, GO, {"by": "bench"})
                               for eid, k in zip(ids, kinds, strict=True) if k == "signalled"))
        await watch.all_finished(ids, timeout)
        watch.unsubscribe()
    expected = {"three": "completed", "signalled": "completed", "fails": "failed"}
    for eid, k in zip(ids, kinds, strict=True):
        found = store.get_execution(eid)
        if found is None or found.status != expected[k]:
            result.problems.append(f"{eid} ({k}): {None if found is None else found.status}")
    result.checked += n
    return ids


def seed(path: Path, n: int, *, synchronous: str, mixed: bool, timeout: float,
         result: Result) -> list[str]:
    store = open_store(path.parent, path.stem, synchronous)
    try:
        return asyncio.run(run_executions(store, n, mixed=mixed, timeout=timeout,
                                          result=result))
    finally:
        store.close()


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    skip = {"audit": "seq", "timers": "timer_id"}.get(table)  # numbered by SQLite
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})") if row[1] != skip]


def _copy_sql(conn: sqlite3.Connection, table: str) -> str:
    columns = _columns(conn, table)
    values = []
    for column in columns:
        if column == "execution_id":
            values.append("printf('%08x%08x', c.k, b.n)")
        elif column == "idempotency_key":
            values.append("NULL")  # unique per workflow: a copy must not repeat it
        elif column in _TIME_COLUMNS:
            values.append(f"t.{column} - c.k * :step")
        else:
            values.append(f"t.{column}")
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"
            f" FROM _copies c CROSS JOIN _base b CROSS JOIN {table} t"
            " WHERE t.execution_id = b.execution_id AND c.k BETWEEN :first AND :last"
            f" ORDER BY c.k, b.n{_ORDER[table]}")


def multiply(path: Path, copies: int, *, spread_s: float, chunk_rows: int = 60_000) -> float:
    """Add ``copies`` copies of every execution in the file (with its steps, signals, timers
    and audit), copy k shifted ``k * spread_s / copies`` seconds into the past. Returns the
    seconds it took."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("CREATE TEMP TABLE _base (n INTEGER PRIMARY KEY, execution_id TEXT)")
        conn.execute("INSERT INTO _base (execution_id) SELECT execution_id FROM executions"
                     " ORDER BY created_at")
        base = conn.execute("SELECT count(*) FROM _base").fetchone()[0]
        conn.execute("CREATE TEMP TABLE _copies (k INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO _copies VALUES (?)", [(k,) for k in range(1, copies + 1)])
        statements = [_copy_sql(conn, table) for table in _TABLES]
        per_chunk = max(1, chunk_rows // max(1, base))
        for first in range(1, copies + 1, per_chunk):
            params = {"first": first, "last": min(copies, first + per_chunk - 1),
                      "step": spread_s / copies}
            conn.execute("BEGIN")
            for statement in statements:
                conn.execute(statement, params)
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def file_bytes(path: Path) -> int:
    """The main file's size once its WAL is checkpointed into it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)
    finally:
        conn.close()


def table_bytes(path: Path) -> dict[str, int] | None:
    """Bytes per table and index (dbstat), None where SQLite was built without it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return {name: int(size) for name, size in rows}


def count_rows(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in _TABLES}
    finally:
        conn.close()
