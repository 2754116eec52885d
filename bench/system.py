"""System workloads: a real daemon process, driven from another process (issue #7).

``daemon`` starts 10,000 three-step executions through ``DurableClient`` (this process) against
a ``durablectl daemon start`` subprocess on a fresh database and workflows folder, and times the
first start call to the last completion, read from the database. At ``synchronous=FULL`` it runs
a second time at NORMAL, so one ``make bench`` shows both targets.

``cli_signal`` runs a workflow that loops over ``wait_for_signal`` in a daemon and sends it
signals with ``durablectl signal ID SIGNAL --payload JSON`` processes: the wall time of each
command, and the time from the command returning to the workflow's next step starting (the step
returns ``time.time()``, which is comparable across processes).

Both check their own work: every execution completed with the right result and its step rows,
and the daemon's pragmas (read back through the same file) are the ones asked for.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench.common import ANY, Result, check_pragmas, median, percentile, verify_execution
from bench.daemon_proc import DaemonProcess
from bench.workloads import Sizes, three_steps_expected
from durablectl import DurableClient, SqliteStore

# (figure, direction, target, what): the shape of bench.run.TARGETS
TARGETS: list[tuple[str, str, float, str]] = [
    ("daemon_executions_per_s", ">=", 1500.0, "daemon: client starts, executions/s"),
    ("daemon_executions_per_s_normal", ">=", 3000.0,
     "daemon: client starts, executions/s at NORMAL"),
    ("cli_signal_wall_p50_ms", "<=", 150.0, "cli: signal ID SIGNAL, median wall (ms)"),
    ("cli_signal_to_step_p50_ms", "<=", 50.0, "cli: signal returned to next step p50 (ms)"),
]

LABELS: dict[str, str] = {
    "daemon_executions_per_s": "executions/s (client -> daemon)",
    "daemon_steps_per_s": "steps/s",
    "daemon_steps_per_ceiling_commit": "steps/s / ceiling commits/s",
    "daemon_total_s": "first start to last completion (s)",
    "daemon_all_started_s": "all start_execution returned (s)",
    "daemon_starts_per_s": "start_execution calls/s",
    "daemon_executions_per_s_normal": "executions/s at NORMAL",
    "daemon_steps_per_s_normal": "steps/s at NORMAL",
    "daemon_total_s_normal": "first start to last completion, NORMAL (s)",
    "daemon_capacity_per_s_normal": "capacity at NORMAL: executions/s, more client threads",
    "cli_signal_wall_p50_ms": "signal ID SIGNAL, median wall (ms)",
    "cli_signal_wall_p90_ms": "signal ID SIGNAL, p90 wall (ms)",
    "cli_signal_to_step_p50_ms": "signal returned -> next step p50 (ms)",
    "cli_signal_to_step_p90_ms": "signal returned -> next step p90 (ms)",
    "cli_signal_sent_to_step_p50_ms": "signal launched -> next step p50 (ms)",
}

THREE_STEPS = "bench.sys.three_steps"
SIGNAL_LOOP = "bench.sys.signal_loop"
TICK = "bench.sys.tick"

MODULE = f'''
import time

from durablectl import Signal, workflow

Tick = Signal("{TICK}")


@workflow("{THREE_STEPS}")
async def three_steps(ctx, data):
    i = data["i"]
    a = await ctx.step("a", lambda: i + 1)
    b = await ctx.step("b", lambda: a * 2)
    c = await ctx.step("c", lambda: {{"i": i, "b": b}})
    return {{"i": i, "sum": a + b, "c": c}}


@workflow("{SIGNAL_LOOP}")
async def signal_loop(ctx, data):
    total = 0
    for i in range(data["n"]):
        payload = await ctx.wait_for_signal(Tick, step_id=f"wait-{{i}}")
        await ctx.step(f"got-{{i}}", time.time)  # when the step after the wait started
        total += payload["v"]
    return {{"n": data["n"], "total": total}}
'''


@contextmanager
def running_daemon(folder: Path, name: str, synchronous: str) -> Iterator[DaemonProcess]:
    """A real daemon (``bench.daemon_proc``) on a new database in ``folder/name`` with the
    benchmark workflows; stopped (killed if it lingers) on the way out."""
    home = folder / name
    (home / "workflows").mkdir(parents=True)
    (home / "workflows" / "bench_system.py").write_text(MODULE)
    daemon = DaemonProcess(home, home / "durable.db", home / "workflows",
                           synchronous=synchronous)
    daemon.start()
    try:
        yield daemon
    finally:
        with suppress(RuntimeError):  # it did not stop in time: stop() killed it
            daemon.stop(timeout=120)


def _start_all(client: DurableClient, n: int, threads: int) -> list[str]:
    """Start executions 0..n-1 from ``threads`` threads (a web app's request threads); ids in
    input order."""
    ids: list[str] = [""] * n
    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            for i in range(first, n, threads):
                ids[i] = client.start_execution(THREE_STEPS, {"i": i})
        except BaseException as exc:  # reported by the caller, not lost in a thread
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return ids


def _throughput(folder: Path, name: str, synchronous: str, sizes: Sizes,
                result: Result, threads: int | None = None) -> dict[str, float]:
    """One daemon, n executions started through the client (``threads`` calling threads,
    ``sizes.daemon_client_threads`` unless given); the timings of the pass."""
    n = sizes.daemon_executions
    threads = sizes.daemon_client_threads if threads is None else threads
    with running_daemon(folder, name, synchronous) as daemon:
        store = SqliteStore(daemon.database, synchronous=synchronous)
        try:
            check_pragmas(result, store, synchronous)
            client = DurableClient(store)
            with warnings.catch_warnings():
                # a live daemon runs them: "no worker is running" would be a failure
                warnings.filterwarnings("error", message=".*no worker is running")
                t0 = time.perf_counter()
                ids = _start_all(client, n, threads)
            t_started = time.perf_counter()
            deadline = t_started + sizes.timeout_s
            while store.count_executions().get("completed", 0) < n:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{n} executions not completed in {sizes.timeout_s}s: "
                                       f"{store.count_executions()}")
                time.sleep(0.005)
            t1 = time.perf_counter()
            for i, eid in enumerate(ids):
                expected, steps = three_steps_expected(i)
                result.problems += verify_execution(store, eid, result=expected, steps=steps)
                result.checked += 1
            counts = store.count_executions()
            if counts != {"completed": n}:
                result.problems.append(f"{name}: executions by status {counts}")
        finally:
            store.close()
    return {"total": t1 - t0, "started": t_started - t0}


def run_daemon_throughput(folder: Path, synchronous: str, sizes: Sizes) -> Result:
    """Executions/s of a real daemon fed by a client process; also at NORMAL when FULL."""
    result = Result("daemon")
    n = sizes.daemon_executions
    timing = _throughput(folder, "daemon-main", synchronous, sizes, result)
    result.figures.update({
        "daemon_executions_per_s": n / timing["total"],
        "daemon_steps_per_s": 3 * n / timing["total"],
        "daemon_total_s": timing["total"],
        "daemon_all_started_s": timing["started"],
        "daemon_starts_per_s": n / timing["started"],
    })
    if synchronous == "FULL":
        normal = _throughput(folder, "daemon-normal", "NORMAL", sizes, result)
        result.figures.update({
            "daemon_executions_per_s_normal": n / normal["total"],
            "daemon_steps_per_s_normal": 3 * n / normal["total"],
            "daemon_total_s_normal": normal["total"],
        })
        capacity = _throughput(folder, "daemon-capacity", "NORMAL", sizes, result,
                               threads=sizes.daemon_capacity_threads)
        result.figures["daemon_capacity_per_s_normal"] = n / capacity["total"]
        result.diagnostics["capacity_client_threads"] = sizes.daemon_capacity_threads
    result.diagnostics["client_threads"] = sizes.daemon_client_threads
    result.diagnostics["executions"] = n
    return result


# CLI signal ----------------------------------------------------------------------------------
def _wait_parked(store: SqliteStore, execution_id: str, round_: int, timeout: float) -> None:
    """Until the execution waits on ``wait-<round_>`` (its previous steps are stored)."""
    deadline = time.perf_counter() + timeout
    want = 2 * round_
    while True:
        execution = store.get_execution(execution_id)
        if execution is not None and execution.status == "waiting" and \
                len(store.list_step_results(execution_id)) >= want:
            return
        if time.perf_counter() > deadline:
            status = None if execution is None else execution.status
            raise TimeoutError(f"round {round_}: execution {execution_id} is {status}")
        time.sleep(0.002)


def run_cli_signal(folder: Path, synchronous: str, sizes: Sizes) -> Result:
    result = Result("cli_signal")
    n = sizes.cli_signals
    warm = 2
    total_rounds = n + warm
    walls: list[float] = []
    to_step: list[float] = []
    sent_to_step: list[float] = []
    with running_daemon(folder, "cli-signal", synchronous) as daemon:
        store = SqliteStore(daemon.database, synchronous=synchronous)
        try:
            check_pragmas(result, store, synchronous)
            execution_id = DurableClient(store).start_execution(SIGNAL_LOOP,
                                                                {"n": total_rounds})
            marks: list[tuple[float, float]] = []
            for i in range(total_rounds):
                _wait_parked(store, execution_id, i, sizes.timeout_s)
                launched = time.time()
                started = time.perf_counter()
                done = daemon.cli("signal", execution_id, TICK, "--payload",
                                  json.dumps({"v": i}))
                wall = (time.perf_counter() - started) * 1000.0
                returned = time.time()
                if done.returncode != 0 or done.stderr:
                    result.problems.append(f"signal {i}: exit {done.returncode}, "
                                           f"stderr {done.stderr.strip()[:200]!r}")
                marks.append((launched, returned))
                if i >= warm:
                    walls.append(wall)
            deadline = time.perf_counter() + sizes.timeout_s
            while (found := store.get_execution(execution_id)) is not None and found.is_active:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"execution {execution_id} did not finish")
                time.sleep(0.005)
            rows = {row.step_id: row for row in store.list_step_results(execution_id)}
            steps: dict[str, tuple[str, Any]] = {}
            for i in range(total_rounds):
                steps[f"wait-{i}"] = ("signal", {"kind": "signal", "payload": {"v": i}})
                steps[f"got-{i}"] = ("step", ANY)
                row = rows.get(f"got-{i}")
                if row is None or not isinstance(row.result, float):
                    continue
                if i >= warm:
                    to_step.append((row.result - marks[i][1]) * 1000.0)
                    sent_to_step.append((row.result - marks[i][0]) * 1000.0)
            result.problems += verify_execution(
                store, execution_id,
                result={"n": total_rounds, "total": total_rounds * (total_rounds - 1) // 2},
                steps=steps)
            result.checked += 1
        finally:
            store.close()
    if walls and to_step:
        result.figures.update({
            "cli_signal_wall_p50_ms": median(walls),
            "cli_signal_wall_p90_ms": percentile(walls, 90),
            "cli_signal_to_step_p50_ms": median(to_step),
            "cli_signal_to_step_p90_ms": percentile(to_step, 90),
            "cli_signal_sent_to_step_p50_ms": median(sent_to_step),
        })
    result.diagnostics["signals"] = len(walls)
    result.diagnostics["wall_ms"] = [round(w, 1) for w in walls]
    result.diagnostics["to_step_ms"] = [round(t, 2) for t in to_step]
    result.notes.append("signal returned -> next step is negative when the step started "
                        "before the command's process had exited")
    return result


if __name__ == "__main__":  # a quick manual run: python -m bench.system [--quick] [NORMAL]
    from bench.workloads import FULL, QUICK

    chosen = QUICK if "--quick" in sys.argv else FULL
    mode = "NORMAL" if "NORMAL" in sys.argv else "FULL"
    scratch = Path(tempfile.mkdtemp(prefix="durablectl-system-"))
    try:
        from bench.workloads import run_ceiling

        (scratch / "ceiling").mkdir()
        ceiling = run_ceiling(scratch / "ceiling", mode, chosen).figures["ceiling_commits_per_s"]
        for run in (run_daemon_throughput, run_cli_signal):
            outcome = run(scratch, mode, chosen)
            if "daemon_steps_per_s" in outcome.figures:  # bench.run does this with its own
                outcome.figures["daemon_steps_per_ceiling_commit"] = \
                    outcome.figures["daemon_steps_per_s"] / ceiling
            print(json.dumps(outcome.to_json() | {"name": outcome.name}, default=str)[:3000])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
