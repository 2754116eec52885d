"""``parked``: many parked executions in a real daemon (issue #7: "parked at scale").

A ``durablectl daemon run`` child process parks ``parked_executions`` executions through the
engine (half sleeping for hours, half waiting for a signal that never comes): this process only
stores them (grouped commits through an unstarted ``DurableService``) and nudges; the daemon
claims, runs and parks every one. Measured: the daemon's memory (VmRSS now, VmHWM its peak) on
the empty database, once all are parked, after a restart with all of them parked (and the time
to ready), and the wake-up lateness of short sleeps run through the daemon with them parked
(the timer's due time to the workflow body's next step running, as W3 measures it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ANY,
    Result,
    check_pragmas,
    open_store,
    percentile,
    sleep_due,
    verify_execution,
)
from bench.daemon_proc import DaemonProcess
from bench.workloads import Sizes
from durablectl import DurableService
from durablectl.store.sqlite import SqliteStore

SLEEP_LONG = "bench.parked.sleep_long"
WAIT_FOREVER = "bench.parked.wait_forever"
SHORT_SLEEP = "bench.parked.short_sleep"
LONG_SLEEP_S = 6 * 3600.0
CREATE_BATCH = 2000  # starts awaited together: one grouped commit or a few per batch

# written into the daemon's workflows folder; this process imports the same file
WORKFLOWS_SOURCE = f'''"""Workflows of the parked-at-scale benchmark."""
import time

from durablectl import workflow


@workflow("{SLEEP_LONG}")
async def sleep_long(ctx, data):
    await ctx.sleep(data["seconds"], step_id="nap")
    return data["i"]


@workflow("{WAIT_FOREVER}")
async def wait_forever(ctx, data):
    return await ctx.wait_for_signal("bench.parked.never", step_id="wait")


@workflow("{SHORT_SLEEP}")
async def short_sleep(ctx, data):
    # sleeps until an absolute instant (the stored timer wins on replay)
    await ctx.sleep(max(0.0, data["until"] - time.time()), step_id="nap")
    woke = await ctx.step("woke", time.time)
    return {{"i": data["i"], "woke": woke}}
'''

# (figure, direction, target, what), as bench/run.py's TARGETS
TARGETS: list[tuple[str, str, float, str]] = [
    ("parked_rss_mb", "<=", 150.0, "parked: daemon RSS with 100,000 parked (MB)"),
    ("parked_peak_rss_mb", "<=", 150.0, "parked: daemon peak RSS (VmHWM), parking + restart"),
    ("parked_p99_ms", "<=", 10.0, "parked: wake-up lateness p99 with them parked (ms)"),
]

LABELS: dict[str, str] = {
    "parked_executions": "parked (half sleeping, half waiting)",
    "parked_store_s": "store them, no daemon running (s)",
    "parked_backlog_ready_s": "daemon ready with them all pending (s)",
    "parked_park_s": "store + park them all (s)",
    "parked_per_s": "parked per second",
    "parked_empty_rss_mb": "daemon RSS, empty database (MB)",
    "parked_rss_mb": "daemon RSS, all parked (MB)",
    "parked_peak_rss_mb": "daemon peak RSS, parking+restart (MB)",
    "parked_parking_peak_rss_mb": "  peak while parking them (MB)",
    "parked_restart_ready_s": "restart: new daemon to ready (s)",
    "parked_restart_rss_mb": "restart: RSS at ready (MB)",
    "parked_restart_peak_rss_mb": "restart: peak RSS at ready (MB)",
    "parked_after_probe_rss_mb": "restart: RSS after the sleeps (MB)",
    "parked_kb_per_execution": "RSS above empty per parked (kB)",
    "parked_cache_entries": "history cache entries, all parked",
    "parked_sticky_entries": "sticky coroutine cache entries",
    "parked_p50_ms": "wake-up lateness p50 (ms)",
    "parked_p99_ms": "wake-up lateness p99 (ms)",
    "parked_max_ms": "wake-up lateness max (ms)",
    "parked_due_spread_s": "sleeps' due times spread (s)",
    "parked_baseline_p50_ms": "same sleeps, nothing parked: p50 (ms)",
    "parked_baseline_p99_ms": "same sleeps, nothing parked: p99 (ms)",
    "parked_baseline_max_ms": "same sleeps, nothing parked: max (ms)",
    "parked_baseline_due_spread_s": "  their due times spread (s)",
}


def _load_workflows(path: Path) -> list[Any]:
    spec = importlib.util.spec_from_file_location("bench_parked_workflows", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module.sleep_long, module.wait_forever, module.short_sleep]


async def _start_many(service: DurableService, workflow_id: str,
                      inputs: list[dict[str, Any]], daemon: DaemonProcess | None) -> list[str]:
    """Store the executions in batches (grouped commits) and nudge the daemon (when one
    runs) after each."""
    ids: list[str] = []
    for first in range(0, len(inputs), CREATE_BATCH):
        batch = inputs[first:first + CREATE_BATCH]
        ids += await asyncio.gather(*(service.start_execution(workflow_id, data)
                                      for data in batch))
        if daemon is not None:
            daemon.nudge()
    return ids


def _count(store: SqliteStore, workflow_id: str, statuses: tuple[str, ...]) -> int:
    marks = ",".join("?" * len(statuses))
    with store.raw_read() as conn:
        row = conn.execute(f"SELECT count(*) FROM executions WHERE status IN ({marks})"
                           " AND workflow_id = ?", (*statuses, workflow_id)).fetchone()
    return int(row[0])


async def _wait_counts(store: SqliteStore, wanted: dict[tuple[str, tuple[str, ...]], int],
                       timeout: float, every: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = {key: _count(store, *key) for key in wanted}
        if all(seen[key] >= n for key, n in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not there after {timeout:g}s: {seen} (wanted {wanted})")
        await asyncio.sleep(every)


def _check_parked(store: SqliteStore, result: Result, half: int, when: str) -> None:
    """Exactly ``half`` executions sleeping and ``half`` waiting, with their pending timers,
    and none of them holding a step (nothing woke, nothing was lost)."""
    for workflow_id, status in ((SLEEP_LONG, "sleeping"), (WAIT_FOREVER, "waiting")):
        count = _count(store, workflow_id, (status,))
        if count != half:
            result.problems.append(f"{when}: {count} {workflow_id} {status}, not {half}")
    with store.raw_read() as conn:
        timers = dict(conn.execute(
            "SELECT t.kind, count(*) FROM timers t JOIN executions e USING (execution_id)"
            " WHERE t.state = 'pending' AND e.workflow_id IN (?, ?) GROUP BY t.kind",
            (SLEEP_LONG, WAIT_FOREVER)).fetchall())
        steps = conn.execute("SELECT count(*) FROM steps s JOIN executions e"
                             " USING (execution_id) WHERE e.workflow_id IN (?, ?)",
                             (SLEEP_LONG, WAIT_FOREVER)).fetchone()[0]
    if timers != {"sleep": half, "signal": half}:
        result.problems.append(f"{when}: pending timers {timers}, not {half} of each kind")
    if steps:
        result.problems.append(f"{when}: {steps} step rows: a parked execution went on")


def _cache_figures(daemon: DaemonProcess, result: Result) -> None:
    cache = daemon.status().get("cache")
    if not isinstance(cache, dict):
        result.notes.append("the daemon's status reports no cache sizes")
        return
    result.diagnostics["cache"] = cache
    if "histories" in cache:
        result.figures["parked_cache_entries"] = float(cache["histories"])
    if cache.get("coroutines") is not None:
        result.figures["parked_sticky_entries"] = float(cache["coroutines"])


def _lateness(store: SqliteStore, ids: list[str], result: Result,
              prefix: str) -> dict[str, float]:
    """Check each short sleep and measure due time -> its ``woke`` step running."""
    late_ms: list[float] = []
    dues: list[float] = []
    for i, eid in enumerate(ids):
        result.problems += verify_execution(
            store, eid, result=ANY, steps={"nap": ("sleep", None), "woke": ("step", ANY)},
            check_result=lambda r, i=i: None if isinstance(r, dict) and r.get("i") == i
            else f"result {r!r} does not carry i={i}")
        result.checked += 1
        due = sleep_due(store, eid, "nap")
        execution = store.get_execution(eid)
        if due is None:
            result.problems.append(f"{eid}: no sleep_scheduled audit entry")
            continue
        if execution is None or not isinstance(execution.result, dict):
            continue
        if due[1] > due[0]:
            result.diagnostics[f"{prefix}_parked_after_due"] = result.diagnostics.get(
                f"{prefix}_parked_after_due", 0) + 1
        dues.append(due[0])
        late_ms.append((float(execution.result["woke"]) - due[0]) * 1000.0)
    early = [x for x in late_ms if x < 0]
    if early:
        result.problems.append(f"{prefix}: {len(early)} sleeps woke early (by up to "
                               f"{-min(early):.3f} ms)")
    figures = {f"{prefix}_p50_ms": percentile(late_ms, 50),
               f"{prefix}_p99_ms": percentile(late_ms, 99),
               f"{prefix}_max_ms": max(late_ms) if late_ms else float("nan")}
    if dues:
        figures[f"{prefix}_due_spread_s"] = max(dues) - min(dues)
    return figures


async def _probe(store: SqliteStore, service: DurableService, daemon: DaemonProcess,
                 sizes: Sizes, result: Result, prefix: str) -> None:
    """``parked_probe_sleeps`` short sleeps through the daemon, their due times spread evenly
    over ``parked_probe_spread_s`` starting ``parked_probe_lead_s`` from now (so that their
    first runs are over before the first is due)."""
    m = sizes.parked_probe_sleeps
    # The kernel may still be writing back the dirty pages of parking (hundreds of MB, for up
    # to ~30 s), and every fsync of the probe would queue behind them (one run saw p50 180 ms
    # against 3-6 ms otherwise). Flush first: the figure is the loop's with them parked, not
    # the disk's catching up; the flush's duration is in the diagnostics.
    t0 = time.perf_counter()
    os.sync()
    result.diagnostics[f"{prefix}_sync_s"] = round(time.perf_counter() - t0, 3)
    done_before = _count(store, SHORT_SLEEP, ("completed", "failed"))
    wal = Path(store.path + "-wal")
    before = {"wal_mb": round(wal.stat().st_size / 2**20, 1) if wal.exists() else 0.0,
              "load_1min": round(os.getloadavg()[0], 2), "daemon_cpu_s": daemon.cpu_s()}
    base = time.time() + sizes.parked_probe_lead_s
    ids = await _start_many(service, SHORT_SLEEP, [
        {"i": i, "until": base + sizes.parked_probe_spread_s * i / m} for i in range(m)], daemon)
    await _wait_counts(store, {(SHORT_SLEEP, ("completed", "failed")): done_before + m},
                       sizes.timeout_s, 0.2)
    # other work on the machine skews lateness: say how busy it was and what the daemon used
    result.diagnostics[prefix] = {**before, "load_1min_after": round(os.getloadavg()[0], 2),
                                  "daemon_cpu_s": round(daemon.cpu_s() - before["daemon_cpu_s"],
                                                        3)}
    result.figures.update(_lateness(store, ids, result, prefix))


async def _scenario(result: Result, home: Path, synchronous: str, sizes: Sizes) -> None:
    workflows = home / "workflows"
    workflows.mkdir()
    (workflows / "parked_bench.py").write_text(WORKFLOWS_SOURCE)
    database = home / "parked.db"
    store = open_store(home, "parked", synchronous)
    check_pragmas(result, store, synchronous)
    wfs = _load_workflows(workflows / "parked_bench.py")
    service = DurableService(store, wfs)  # never started: it only stores executions
    daemon = DaemonProcess(home, database, workflows, synchronous=synchronous)
    figures = result.figures
    n = sizes.parked_executions
    half = n // 2
    try:
        daemon.start()
        figures["parked_executions"] = float(2 * half)
        figures["parked_empty_rss_mb"] = daemon.memory_mb()["VmRSS"]
        # the same short sleeps with nothing parked: what this machine gives right now
        await _probe(store, service, daemon, sizes, result, "parked_baseline")
        if (code := daemon.stop()) != 0:
            result.problems.append(f"the daemon exited {code} on stop")
        # stored while no daemon runs (one writer: fast), then the daemon claims, runs and
        # parks every one of them: a backlog as after a burst or downtime
        t0 = time.perf_counter()
        await _start_many(service, SLEEP_LONG, [{"i": i, "seconds": LONG_SLEEP_S}
                                                for i in range(half)], None)
        await _start_many(service, WAIT_FOREVER, [{"i": i} for i in range(half)], None)
        figures["parked_store_s"] = time.perf_counter() - t0
        figures["parked_backlog_ready_s"] = daemon.start()
        await _wait_counts(store, {(SLEEP_LONG, ("sleeping",)): half,
                                   (WAIT_FOREVER, ("waiting",)): half},
                           sizes.timeout_s, 0.05 if n < 10_000 else 0.5)
        figures["parked_park_s"] = time.perf_counter() - t0
        figures["parked_per_s"] = 2 * half / figures["parked_park_s"]
        await asyncio.sleep(0.5 if n < 10_000 else 2.0)  # let the last runs' garbage go
        memory = daemon.memory_mb()
        figures["parked_rss_mb"] = memory["VmRSS"]
        figures["parked_parking_peak_rss_mb"] = memory["VmHWM"]
        _cache_figures(daemon, result)
        _check_parked(store, result, half, "after parking")
        if (code := daemon.stop()) != 0:
            result.problems.append(f"the daemon exited {code} on stop")
        # restart with them all parked
        figures["parked_restart_ready_s"] = daemon.start()
        memory = daemon.memory_mb()
        figures["parked_restart_rss_mb"] = memory["VmRSS"]
        figures["parked_restart_peak_rss_mb"] = memory["VmHWM"]
        _check_parked(store, result, half, "after the restart")
        # short sleeps through the daemon with them parked
        await _probe(store, service, daemon, sizes, result, "parked")
        memory = daemon.memory_mb()
        figures["parked_after_probe_rss_mb"] = memory["VmRSS"]
        figures["parked_peak_rss_mb"] = max(figures["parked_parking_peak_rss_mb"],
                                            memory["VmHWM"])
        figures["parked_rss_mb"] = max(figures["parked_rss_mb"], memory["VmRSS"])
        figures["parked_kb_per_execution"] = (
            (figures["parked_rss_mb"] - figures["parked_empty_rss_mb"]) * 1024.0 / n)
        _check_parked(store, result, half, "after the sleeps")
        result.checked += 2 * half
        if (code := daemon.stop()) != 0:
            result.problems.append(f"the daemon exited {code} on stop")
    finally:
        daemon.kill()
        store.close()


def run_parked(folder: Path, synchronous: str, sizes: Sizes) -> Result:
    """The whole workload, in ``folder/parked``; its checks fail the run, missed targets do
    not."""
    result = Result("parked")
    home = folder / "parked"
    home.mkdir(mode=0o700)
    asyncio.run(asyncio.wait_for(_scenario(result, home, synchronous, sizes),
                                 sizes.timeout_s * 3))
    for key, count in result.diagnostics.items():
        if key.endswith("_parked_after_due"):
            result.notes.append(f"{key.removesuffix('_parked_after_due')}: {count} short "
                                "sleeps parked after they were due (the start backlog)")
    return result
