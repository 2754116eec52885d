"""Restart after a crash: a worker process is killed with SIGKILL while a step runs; a new worker
process is started, and we measure the time from its start to the interrupted execution running
again (the interrupted step starts over in the new process and records ``time.time()`` as its
durable result).

The kill point is deterministic, not timed: the step writes a marker file and blocks, and the
parent kills the worker once the marker exists. Run as ``python -m bench.restart ...`` this
worker's entry point is ``bench.restart_child``; the benchmark calls :func:`run_restart`.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import ANY, Result, check_pragmas, verify_execution
from durablectl import DurableService, SqliteStore, workflow

PHASE_ENV = "DURABLECTL_BENCH_RESTART_PHASE"
ROOT = Path(__file__).resolve().parents[1]


def _before(folder: str) -> int:
    with open(os.path.join(folder, "before.log"), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return 1


def _work(folder: str) -> dict[str, Any]:
    if os.environ.get(PHASE_ENV) == "first":
        Path(folder, "blocked").write_text(str(os.getpid()))
        time.sleep(120)  # the parent kills this process long before
    return {"t": time.time(), "pid": os.getpid()}


@workflow("bench.restart.v1")
async def restartable(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    before = await ctx.step("before", partial(_before, data["dir"]))
    work = await ctx.step("work", partial(_work, data["dir"]))
    return {"before": before, "work_pid": work["pid"]}


# the worker process ---------------------------------------------------------------------------
def _say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def _worker(db: str, synchronous: str, phase: str, folder: str,
                  execution_id: str | None, t_process: float, t_imported: float) -> None:
    _say(event="imported", process=t_process, imported=t_imported, pid=os.getpid())
    store = SqliteStore(db, synchronous=synchronous)
    t_opening = time.time()
    async with DurableService(store, [restartable]) as service:
        _say(event="ready", opening=t_opening, ready=time.time())
        if phase == "first":
            eid = await service.start_execution(restartable, {"dir": folder})
            _say(event="started", execution_id=eid)
            await asyncio.sleep(120)  # killed before this ends
            return
        assert execution_id is not None
        value = await service.wait(execution_id, timeout=30)
        _say(event="done", result=value, t=time.time())
    store.close()


def main(argv: list[str], t_process: float) -> int:
    """The worker: ``DB SYNCHRONOUS PHASE FOLDER [EXECUTION_ID]``."""
    t_imported = time.time()
    db, synchronous, phase, folder = argv[:4]
    execution_id = argv[4] if len(argv) > 4 else None
    os.environ[PHASE_ENV] = phase
    asyncio.run(_worker(db, synchronous, phase, folder, execution_id, t_process, t_imported))
    return 0


# the parent -----------------------------------------------------------------------------------
class _Child:
    def __init__(self, args: list[str], phase: str, log_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env[PHASE_ENV] = phase
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.restart_child", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"worker did not report {name!r} within {timeout:g}s; "
                                   f"its log: {self.tail()}")
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    raise RuntimeError(f"worker exited with {self.proc.returncode} before "
                                       f"{name!r}; its log: {self.tail()}") from None
                continue
            if event.get("event") == name:
                return event

    def tail(self) -> str:
        self._log.flush()
        try:
            return " | ".join(self.log_path.read_text().strip().splitlines()[-5:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} did not appear within {timeout:g}s")
        time.sleep(0.005)


def run_restart(folder: Path, synchronous: str, timeout: float = 60.0) -> Result:
    result = Result("restart")
    work_dir = folder / "restart"
    work_dir.mkdir(exist_ok=True)
    db = str(folder / "restart.db")
    first = _Child([db, synchronous, "first", str(work_dir)], "first",
                   folder / "restart-first.log")
    second: _Child | None = None
    try:
        first.expect("ready", timeout)
        eid = str(first.expect("started", timeout)["execution_id"])
        _wait_for_file(work_dir / "blocked", timeout)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        second = _Child([db, synchronous, "second", str(work_dir), eid], "second",
                        folder / "restart-second.log")
        imported = second.expect("imported", timeout)
        second.expect("done", timeout)
        second_pid = int(imported["pid"])
        store = SqliteStore(db, synchronous=synchronous)
        try:
            check_pragmas(result, store, synchronous)
            result.problems += verify_execution(
                store, eid, result={"before": 1, "work_pid": second_pid},
                steps={"before": ("step", 1), "work": ("step", ANY)})
            result.checked += 1
            work = next((s.result for s in store.list_step_results(eid)
                         if s.step_id == "work"), None)
        finally:
            store.close()
        runs_of_before = (work_dir / "before.log").read_text().split()
        if len(runs_of_before) != 1:
            result.problems.append(f"step 'before' ran {len(runs_of_before)} times; a "
                                   "committed step must never run again")
        if not isinstance(work, dict) or work.get("pid") != second_pid:
            result.problems.append(f"step 'work' result {work!r} is not from the new worker")
        else:
            spawned = second.spawned
            result.figures.update({
                "restart_s": float(work["t"]) - spawned,
                "restart_interpreter_s": float(imported["process"]) - spawned,
                "restart_imports_s": float(imported["imported"]) - float(imported["process"]),
                "restart_recover_to_rerun_s": float(work["t"]) - float(imported["imported"]),
            })
    except (TimeoutError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        result.problems.append(f"restart: {exc}")
    finally:
        first.close()
        if second is not None:
            second.close()
    return result
