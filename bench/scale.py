"""Scale in the database and retention (issue #7): a million executions, bytes per execution,
and ``prune`` on a large file while a live service keeps working.

``run_scale_db``: the bytes a three-step execution adds (real executions, audit on, WAL
checkpointed, per table from ``dbstat``); then a database of ``scale_executions`` executions
(real ones multiplied, see ``bench.scale_data``), on which ``durablectl status ID`` and
``durablectl list --status failed --limit 50`` run as real processes, plain and ``--json``.

``run_prune``: a database of ``prune_executions`` executions spread over 90 days, a live
``DurableService`` running three-step executions on it, and ``prune --older-than 30d`` in
another process. Figures: the longest prune transaction, the longest write the service waited
for during the prune (and before it, for comparison), the file before, after, after new work
(freed pages are reused) and after ``--vacuum``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cli import durablectl_command
from bench.common import Result, check_pragmas, median, open_store, percentile
from bench.scale_data import (
    WORKFLOWS,
    count_rows,
    file_bytes,
    multiply,
    run_executions,
    seed,
    table_bytes,
    three_steps,
)
from bench.workloads import Sizes
from durablectl import DurableService
from durablectl.model import FINISHED_STATUSES

DAY = 86400.0
WARM_UP_RUNS = 2
PRUNE_AGE_DAYS = 30

TARGETS: list[tuple[str, str, float, str]] = [
    ("scale_cli_status_ms", "<=", 200.0, "scale: status ID at 1M, median wall (ms)"),
    ("scale_cli_status_json_ms", "<=", 200.0, "scale: status ID --json at 1M (ms)"),
    ("scale_cli_list_failed_ms", "<=", 200.0, "scale: list --status failed -n 50 at 1M (ms)"),
    ("scale_cli_list_failed_json_ms", "<=", 200.0,
     "scale: list --status failed -n 50 --json at 1M (ms)"),
    ("scale_bytes_per_execution", "<=", 2048.0, "scale: bytes per 3-step execution, audit on"),
    ("prune_longest_batch_ms", "<=", 50.0, "prune: longest batch transaction (ms)"),
    ("prune_stall_max_ms", "<=", 50.0, "prune: longest live write during prune (ms)"),
]

LABELS: dict[str, str] = {
    "scale_bytes_per_execution": "bytes per 3-step execution",
    "scale_bytes_executions": "  executions + indexes (bytes)",
    "scale_bytes_steps": "  steps + index (bytes)",
    "scale_bytes_audit": "  audit + index (bytes)",
    "scale_executions": "executions in the database",
    "scale_generate_s": "generate (run + multiply) (s)",
    "scale_file_mb": "file size (MB)",
    "scale_cli_status_ms": "status ID, median wall (ms)",
    "scale_cli_status_json_ms": "status ID --json, median wall (ms)",
    "scale_cli_list_failed_ms": "list --status failed -n 50 (ms)",
    "scale_cli_list_failed_json_ms": "list --status failed -n 50 --json (ms)",
    "scale_cli_list_finished_json_ms": "list --status finished -n 50 --json (ms)",
    "scale_python_startup_ms": "  python -c pass, median (ms)",
    "prune_executions": "executions before the prune",
    "prune_generate_s": "generate (run + multiply) (s)",
    "prune_deleted": "executions pruned",
    "prune_s": "prune, wall (s)",
    "prune_executions_per_s": "pruned executions/s",
    "prune_batches": "prune transactions",
    "prune_longest_batch_ms": "longest prune transaction (ms)",
    "prune_batch_p50_ms": "prune transaction p50 (ms)",
    "prune_stall_max_ms": "live write max during prune (ms)",
    "prune_stall_p99_ms": "live write p99 during prune (ms)",
    "prune_baseline_max_ms": "live write max before prune (ms)",
    "prune_live_executions": "live executions run during prune",
    "prune_size_before_mb": "file before (MB)",
    "prune_size_after_mb": "file after prune (MB)",
    "prune_free_mb": "  free pages after prune (MB)",
    "prune_growth_after_reuse_mb": "growth after new work (MB)",
    "prune_size_vacuum_mb": "file after --vacuum (MB)",
    "prune_vacuum_s": "prune --vacuum, wall (s)",
}

MB = 1024.0 * 1024.0


# helpers -------------------------------------------------------------------------------------
def _cli_env(folder: Path, db: Path) -> dict[str, str]:
    """An environment with empty XDG dirs (no user configuration) pointing at ``db``."""
    home = folder / "scale-home"
    for sub in ("state", "config", "data"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLECTL_", "XDG_"))}
    env.update(XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), DURABLECTL_DB=str(db))
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, str, int]:
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return (time.perf_counter() - started) * 1000.0, proc.stdout, proc.stderr, proc.returncode


def _mb(value: float) -> float:
    return value / MB


def _build(path: Path, total: int, seed_count: int, *, synchronous: str, timeout: float,
           result: Result) -> float:
    """Real executions multiplied to about ``total``; returns the seconds it took."""
    started = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    count = min(seed_count, total)
    seed(path, count, synchronous=synchronous, mixed=True, timeout=timeout, result=result)
    copies = max(0, math.ceil(total / count) - 1)
    if copies:
        multiply(path, copies, spread_s=90 * DAY)
    return time.perf_counter() - started


# bytes per execution -------------------------------------------------------------------------
def _grouped(before: dict[str, int], after: dict[str, int], owners: dict[str, str],
             n: int) -> dict[str, float]:
    """Growth per execution per table, each index counted with its table."""
    out: dict[str, float] = {}
    for name, size in after.items():
        grown = size - before.get(name, 0)
        if grown:
            table = owners.get(name, name)
            out[table] = out.get(table, 0.0) + grown / n
    return out


def _measure_bytes(folder: Path, synchronous: str, sizes: Sizes, result: Result) -> None:
    path = folder / "scale-bytes.db"
    store = open_store(folder, "scale-bytes", synchronous)
    store.close()
    base_size, base_tables = file_bytes(path), table_bytes(path) or {}
    n = sizes.scale_bytes_executions
    seed(path, n, synchronous=synchronous, mixed=False, timeout=sizes.timeout_s, result=result)
    grown = file_bytes(path) - base_size
    result.figures["scale_bytes_per_execution"] = grown / n
    tables = table_bytes(path)
    if tables is None:
        result.notes.append("dbstat is not available: no per-table figures")
        return
    with sqlite3.connect(path) as conn:
        owners = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master"))
    per_table = _grouped(base_tables, tables, owners, n)
    per_name = {name: round((size - base_tables.get(name, 0)) / n, 1)
                for name, size in tables.items() if size != base_tables.get(name, 0)}
    for table in ("executions", "steps", "audit"):
        result.figures[f"scale_bytes_{table}"] = per_table.get(table, 0.0)
    result.diagnostics["bytes_per_execution_by_table"] = {k: round(v, 1)
                                                          for k, v in per_table.items()}
    result.diagnostics["bytes_per_execution_by_name"] = per_name


# CLI at scale --------------------------------------------------------------------------------
def _check_list(out: str, as_json: bool, limit: int) -> str | None:
    lines = [line for line in out.splitlines() if line.strip()]
    if not as_json:
        return None if len(lines) == limit + 1 else f"{len(lines)} lines, not header + {limit}"
    rows = [json.loads(line) for line in lines]
    if len(rows) != limit or any(r["status"] != "failed" for r in rows):
        return f"{len(rows)} rows or not all failed"
    stamps = [r["created_at"] for r in rows]
    return None if stamps == sorted(stamps, reverse=True) else "not newest first"


def _check(name: str, out: str, execution_id: str, limit: int) -> str | None:
    try:
        if name.startswith("status"):
            if name.endswith("json"):
                shown = json.loads(out)
                ok = shown["execution_id"] == execution_id and shown["status"] in \
                    FINISHED_STATUSES
                return None if ok else f"wrong execution: {out[:120]!r}"
            return None if execution_id in out else f"id not in output: {out[:120]!r}"
        if name == "list_finished_json":
            return None if len(out.splitlines()) == limit else "wrong row count"
        return _check_list(out, name.endswith("json"), limit)
    except (ValueError, KeyError) as exc:
        return f"bad output ({exc}): {out[:120]!r}"


def _time_cli(folder: Path, db: Path, execution_id: str, sizes: Sizes, result: Result) -> None:
    env = _cli_env(folder, db)
    cwd = folder / "scale-home"
    limit = 50
    base = durablectl_command()
    commands = {
        "status": ["status", execution_id],
        "status_json": ["status", execution_id, "--json"],
        "list_failed": ["list", "--status", "failed", "--limit", str(limit)],
        "list_failed_json": ["list", "--status", "failed", "--limit", str(limit), "--json"],
        "list_finished_json": ["list", "--status", "finished", "--limit", str(limit),
                               "--json"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(WARM_UP_RUNS + sizes.scale_cli_runs):
        for name, args in commands.items():  # interleaved: drift hits every command alike
            elapsed, out, err, code = _run([*base, *args], env, cwd)
            unexpected = [line for line in err.splitlines() if not line.startswith("note:")]
            if code != 0 or unexpected:
                result.problems.append(f"{name} run {i}: exit {code}, stderr {err[:200]!r}")
                continue
            problem = _check(name, out, execution_id, limit)
            if problem:
                result.problems.append(f"{name} run {i}: {problem}")
            elif i >= WARM_UP_RUNS:
                times[name].append(elapsed)
    for name, values in times.items():
        if values:
            result.figures[f"scale_cli_{name}_ms"] = median(values)
            result.diagnostics[f"cli_{name}_p90_ms"] = round(percentile(values, 90), 2)
    startup = [_run([sys.executable, "-c", "pass"], env, cwd)[0] for _ in range(5)]
    result.figures["scale_python_startup_ms"] = median(startup)
    with sqlite3.connect(db) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT execution_id FROM executions WHERE status IN (?)"
            " ORDER BY created_at DESC, execution_id DESC LIMIT 51", ("failed",)).fetchall()
    result.diagnostics["list_failed_plan"] = [row[-1] for row in plan]


def run_scale_db(folder: Path, synchronous: str, sizes: Sizes) -> Result:
    result = Result("scale")
    _measure_bytes(folder, synchronous, sizes, result)
    db = folder / "scale.db"
    result.figures["scale_generate_s"] = _build(
        db, sizes.scale_executions, sizes.scale_seed_executions, synchronous=synchronous,
        timeout=sizes.timeout_s, result=result)
    rows = count_rows(db)
    result.diagnostics["rows"] = rows
    result.figures["scale_executions"] = rows["executions"]
    result.figures["scale_file_mb"] = _mb(file_bytes(db))
    store = open_store(folder, "scale", synchronous)
    try:
        check_pragmas(result, store, synchronous)
        with store.raw_read() as conn:  # a copy in the middle of the file
            execution_id = conn.execute(
                "SELECT execution_id FROM executions WHERE rowid = ?",
                (rows["executions"] // 2,)).fetchone()[0]
    finally:
        store.close()
    _time_cli(folder, db, execution_id, sizes, result)
    return result


# prune ---------------------------------------------------------------------------------------
# The prune runs in a process of its own, as `durablectl prune` does. It times how long each
# of its transactions holds the write lock (BEGIN IMMEDIATE granted to COMMIT done; not the
# wait for the lock) through a thin wrapper around the store's write connection.
_PRUNE_CHILD = """
import json, sys, time
from durablectl import SqliteStore
from durablectl.model import FINISHED_STATUSES
held, slow = [], []
class Timed:
    def __init__(self, conn):
        self._conn, self._began = conn, None
    def execute(self, sql, *args):
        before = time.perf_counter()
        cursor = self._conn.execute(sql, *args)
        if sql.startswith(("COMMIT", "PRAGMA wal_checkpoint")):
            slow.append((sql[:8], round((time.perf_counter() - before) * 1000.0, 1)))
        if sql == "BEGIN IMMEDIATE":
            self._began = time.perf_counter()
        elif sql in ("COMMIT", "ROLLBACK") and self._began is not None:
            held.append((time.perf_counter() - self._began) * 1000.0)
            self._began = None
        return cursor
    def __getattr__(self, name):
        return getattr(self._conn, name)
store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
store._wconn = Timed(store._wconn)
print("ready", flush=True)
sys.stdin.readline()  # go: the process start is not part of what is measured
started = time.perf_counter()
deleted = store.prune_executions(older_than=float(sys.argv[3]), statuses=FINISHED_STATUSES)
elapsed = time.perf_counter() - started
store.close()
slow.sort(key=lambda item: item[1])
print(json.dumps({"deleted": deleted, "elapsed": elapsed, "held_ms": held,
                  "slowest_commits_and_checkpoints_ms": slow[-6:]}))
"""


class LiveWork:
    """Three-step executions run back to back by a live service (a few at a time), with the
    time every write the engine submits waits until it is committed."""

    def __init__(self, store: Any, in_flight: int) -> None:
        self.store = store
        self.in_flight = in_flight
        self.writes: list[tuple[float, float]] = []  # (submitted at, seconds to commit)
        self.ids: list[str] = []
        self._stop = asyncio.Event()
        original = store.submit_to  # the engine's writes go through it (bridge.py)
        writes = self.writes

        class TimedSink:
            """Forwards to the engine's sink, noting when the outcome came back."""

            def __init__(self, sink: Any) -> None:
                self.sink, self.started = sink, time.perf_counter()

            def set_running_or_notify_cancel(self) -> bool:
                return bool(self.sink.set_running_or_notify_cancel())

            def _note(self) -> None:
                writes.append((self.started, time.perf_counter() - self.started))

            def set_result(self, result: Any, /) -> None:
                self._note()
                self.sink.set_result(result)

            def set_exception(self, exception: BaseException | None, /) -> None:
                self._note()
                self.sink.set_exception(exception)

            def done(self) -> bool:
                return bool(self.sink.done())

        def timed(sink: Any, method: Any, /, *args: Any, **kwargs: Any) -> None:
            original(TimedSink(sink), method, *args, **kwargs)

        store.submit_to = timed

    async def run(self, service: DurableService) -> None:
        async def worker(w: int) -> None:
            i = 0
            while not self._stop.is_set():
                eid = await service.start_execution(three_steps, {"i": w * 1_000_000 + i})
                self.ids.append(eid)
                await service.wait(eid, timeout=120)
                i += 1

        await asyncio.gather(*(worker(w) for w in range(self.in_flight)))

    def stop(self) -> None:
        self._stop.set()

    def between(self, start: float, end: float) -> list[float]:
        return [s * 1000.0 for at, s in self.writes if start <= at <= end]


def _size_facts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {"file": os.path.getsize(path),
                "wal": os.path.getsize(str(path) + "-wal")
                if os.path.exists(str(path) + "-wal") else 0,
                "free": int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                * int(conn.execute("PRAGMA page_size").fetchone()[0])}


def _orphans(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: int(conn.execute(
            f"SELECT count(*) FROM {t} WHERE execution_id IS NOT NULL AND execution_id NOT IN"
            " (SELECT execution_id FROM executions)").fetchone()[0])
            for t in ("steps", "audit", "signals", "timers")}


async def _prune_live(db: Path, synchronous: str, cut: float, sizes: Sizes,
                      result: Result) -> dict[str, Any]:
    store = open_store(db.parent, db.stem, synchronous)
    live = LiveWork(store, in_flight=4)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PRUNE_CHILD, str(db), synchronous, repr(cut),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdin is not None and child.stdout is not None
        await child.stdout.readline()  # "ready": started and opened the database
        try:
            async with DurableService(store, WORKFLOWS) as service:
                runner = asyncio.create_task(live.run(service))
                await asyncio.sleep(sizes.prune_baseline_s / 2)  # start-up, cold page cache
                baseline_start = time.perf_counter()
                await asyncio.sleep(sizes.prune_baseline_s)
                baseline_end = time.perf_counter()
                out, err = await child.communicate(b"go\n")
                prune_end = time.perf_counter()
                live.stop()
                await runner
        finally:
            if child.returncode is None:  # we failed before it finished: it must not go on
                child.kill()
                await child.wait()
        if child.returncode != 0:
            result.problems.append(f"prune process failed: {err.decode()[-300:]}")
            return {}
        report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        report["baseline"] = live.between(baseline_start, baseline_end)
        report["during"] = live.between(baseline_end, prune_end)
        report["longest_at_s"] = sorted(
            (round(s * 1000.0, 1), round(at - baseline_end, 3)) for at, s in live.writes
            if baseline_end <= at <= prune_end)[-3:]
        for eid in live.ids:
            found = store.get_execution(eid)
            if found is None or found.status != "completed":
                result.problems.append(f"live execution {eid}: "
                                       f"{None if found is None else found.status}")
        result.checked += len(live.ids)
        result.figures["prune_live_executions"] = len(live.ids)
        return report
    finally:
        store.close()


def run_prune(folder: Path, synchronous: str, sizes: Sizes) -> Result:
    result = Result("prune")
    db = folder / "prune.db"
    result.figures["prune_generate_s"] = _build(
        db, sizes.prune_executions, sizes.prune_seed_executions, synchronous=synchronous,
        timeout=sizes.timeout_s, result=result)
    cut = time.time() - PRUNE_AGE_DAYS * DAY
    marks = ",".join("?" * len(FINISHED_STATUSES))
    with sqlite3.connect(db) as conn:
        result.figures["prune_executions"] = conn.execute(
            "SELECT count(*) FROM executions").fetchone()[0]
        expected = conn.execute(
            f"SELECT count(*) FROM executions WHERE status IN ({marks}) AND updated_at < ?",
            (*FINISHED_STATUSES, cut)).fetchone()[0]
    before = _size_facts(db)
    # the ~800 MB just generated reach the disk first: the prune's figures are the prune's,
    # not the write-back of the generation competing with the live worker's fsyncs
    os.sync()
    report = asyncio.run(_prune_live(db, synchronous, cut, sizes, result))
    if not report:
        return result
    held, during = report["held_ms"], report["during"]
    if not during:  # the live writes were not timed: a stall figure of 0 would be a lie
        result.problems.append("prune: no live write was timed during the prune")
    result.figures.update({
        "prune_deleted": report["deleted"], "prune_s": report["elapsed"],
        "prune_executions_per_s": report["deleted"] / max(report["elapsed"], 1e-9),
        "prune_batches": len(held), "prune_longest_batch_ms": max(held, default=0.0),
        "prune_batch_p50_ms": median(held) if held else 0.0,
        "prune_stall_max_ms": max(during, default=0.0),
        "prune_stall_p99_ms": percentile(during, 99) if during else 0.0,
        "prune_baseline_max_ms": max(report["baseline"], default=0.0),
    })
    result.diagnostics["live_writes_during_prune"] = len(during)
    result.diagnostics["longest_batches_ms"] = [round(h, 1) for h in sorted(held)[-5:]]
    result.diagnostics["longest_live_writes_ms"] = [round(d, 1) for d in sorted(during)[-5:]]
    result.diagnostics["slowest_commits_and_checkpoints_ms"] = report.get(
        "slowest_commits_and_checkpoints_ms")
    result.diagnostics["longest_live_writes_ms_and_s_after_prune_start"] = report[
        "longest_at_s"]
    result.diagnostics["live_writes_over_50ms"] = sum(1 for d in during if d > 50.0)
    result.diagnostics["live_writes_over_50ms_before"] = sum(
        1 for d in report["baseline"] if d > 50.0)
    if report["deleted"] != expected:
        result.problems.append(f"pruned {report['deleted']}, expected {expected}")
    with sqlite3.connect(db) as conn:
        left = conn.execute(
            f"SELECT count(*) FROM executions WHERE status IN ({marks}) AND updated_at < ?",
            (*FINISHED_STATUSES, cut)).fetchone()[0]
    if left:
        result.problems.append(f"{left} old finished executions left")
    orphans = {t: n for t, n in _orphans(db).items() if n}
    if orphans:
        result.problems.append(f"rows of pruned executions left: {orphans}")
    _after_prune(db, synchronous, sizes, before, result)
    return result


def _after_prune(db: Path, synchronous: str, sizes: Sizes, before: dict[str, int],
                 result: Result) -> None:
    """The freed pages are reused by new work; ``prune --vacuum`` gives them back."""
    file_bytes(db)
    after = _size_facts(db)
    store = open_store(db.parent, db.stem, synchronous)
    try:
        asyncio.run(run_executions(store, sizes.prune_reuse_executions, mixed=True,
                          timeout=sizes.timeout_s, result=result))
    finally:
        store.close()
    reused = file_bytes(db)
    env = _cli_env(db.parent, db)
    elapsed, out, err, code = _run(
        [*durablectl_command(), "prune", "--older-than", f"{PRUNE_AGE_DAYS}d", "--vacuum",
         "--json"], env, db.parent)
    if code != 0:
        result.problems.append(f"prune --vacuum: exit {code}: {err[:200]!r}")
    file_bytes(db)  # the vacuumed copy is in the WAL until a checkpoint
    vacuumed = _size_facts(db)
    result.figures.update({
        "prune_size_before_mb": _mb(before["file"] + before["wal"]),
        "prune_size_after_mb": _mb(after["file"]), "prune_free_mb": _mb(after["free"]),
        "prune_growth_after_reuse_mb": _mb(reused - after["file"]),
        "prune_size_vacuum_mb": _mb(vacuumed["file"] + vacuumed["wal"]),
        "prune_vacuum_s": elapsed / 1000.0,
    })
    result.diagnostics["prune_vacuum_output"] = out.strip()[:300]


__all__ = ["LABELS", "TARGETS", "run_prune", "run_scale_db"]
