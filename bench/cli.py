"""CLI start-up: wall time of ``durablectl status ID --json`` as a new process, the command a
script polls with (target: 150 ms on the benchmark machine; DESIGN-NOTES §7).

Each run is a real process of the installed console script (``python -m durablectl`` when there
is none), on a database holding one execution, in a folder of its own with empty XDG dirs so that
no user configuration is read. Two warm-up runs come first (byte-code and page caches); every run
must exit 0 and print that execution's JSON. The interpreter's own start-up (``python -c pass``)
is measured the same way, to show what is left to the command itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench.common import Result, check_pragmas, median, open_store, percentile
from durablectl import DurableClient

WARM_UP_RUNS = 2


def durablectl_command() -> list[str]:
    """The console script beside this interpreter, as ``make install`` puts it."""
    script = Path(sys.executable).with_name("durablectl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "durablectl"]


def _timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, str, str, int]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return (time.perf_counter() - started) * 1000.0, proc.stdout, proc.stderr, proc.returncode


def run_cli(folder: Path, synchronous: str, runs: int) -> Result:
    result = Result("cli")
    home = folder / "cli"
    for sub in ("state", "config", "data", "work"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    store = open_store(folder, "cli", synchronous)
    try:
        check_pragmas(result, store, synchronous)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no worker runs here: the execution stays pending
            execution_id = DurableClient(store).start_execution("bench.cli.v1", {"n": 1})
        db = store.path
    finally:
        store.close()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DURABLECTL_", "XDG_"))}
    env.update(XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), DURABLECTL_DB=db)
    command = [*durablectl_command(), "status", execution_id, "--json"]
    result.diagnostics["command"] = " ".join(command)

    times: list[float] = []
    for i in range(WARM_UP_RUNS + runs):
        elapsed, out, err, code = _timed(command, cwd=home / "work", env=env)
        if code != 0 or err:
            result.problems.append(f"run {i}: exit {code}, stderr {err.strip()[:200]!r}")
            continue
        try:
            shown = json.loads(out)
        except ValueError:
            result.problems.append(f"run {i}: stdout is not JSON: {out[:200]!r}")
            continue
        if shown.get("execution_id") != execution_id or shown.get("status") != "pending":
            result.problems.append(f"run {i}: wrong execution shown: {out[:200]!r}")
            continue
        if i >= WARM_UP_RUNS:
            times.append(elapsed)
    baseline = [_timed([sys.executable, "-c", "pass"], cwd=home / "work", env=env)[0]
                for _ in range(max(3, runs // 2))]
    if times:
        result.checked = 1
        result.figures["cli_status_json_p50_ms"] = median(times)
        result.figures["cli_status_json_p90_ms"] = percentile(times, 90)
        result.figures["cli_status_json_min_ms"] = min(times)
        result.figures["cli_python_startup_ms"] = median(baseline)
    result.diagnostics["runs"] = len(times)
    result.diagnostics["times_ms"] = [round(t, 2) for t in times]
    return result
