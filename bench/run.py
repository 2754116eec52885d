"""``make bench``: run the workloads against real SQLite files in a temporary folder, print a
plain-text table, then ONE line of JSON with every figure, target and ratio.

    python -m bench.run [--synchronous FULL|NORMAL] [--quick] [--only W1,W2,...] [--dir PATH]
                        [--keep]

Workloads: ``ceiling`` (raw single-row commits/s, same folder and pragmas; always measured),
``W1`` (throughput in one process), ``W2`` (a 1,000-signal loop's round trips), ``W3`` (sleep
wake-up lateness), ``W4`` (a 10,000-step history and its replay), ``restart`` (SIGKILL a
worker, start a new one), ``cli`` (``durablectl status ID --json`` as a new process), ``daemon``
(10,000 executions started by a client process, run by a real daemon, at FULL and NORMAL),
``cli_signal`` (``durablectl signal`` to a waiting workflow), ``parked`` (100,000 parked
executions: the daemon's memory and wake-up lateness), ``scale`` (the CLI on a database of
1,000,000 executions; bytes per execution), ``prune`` (retention under a live worker). Each one
checks its own results; the exit status is 1 when any check fails (never for a missed target).
Targets are defined at ``synchronous=FULL``; the ratios are printed either way. Output: the
table, one JSON line per workload, then one JSON line with every figure, target and ratio.
A full run takes about three minutes and needs ~4 GB free in ``--dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import parked, scale, system
from bench.cli import run_cli
from bench.common import Result, open_store, read_pragmas
from bench.restart import run_restart
from bench.workloads import FULL, QUICK, Sizes, run_ceiling, run_w1, run_w2, run_w3, run_w4

WORKLOADS = ("ceiling", "W1", "W2", "W3", "W4", "restart", "cli", "daemon", "cli_signal",
             "parked", "scale", "prune")
# workloads that are plain functions of (folder, synchronous, sizes), running their own
# processes and event loops
SYSTEM_WORKLOADS: dict[str, Callable[[Path, str, Sizes], Result]] = {
    "daemon": system.run_daemon_throughput, "cli_signal": system.run_cli_signal,
    "parked": parked.run_parked, "scale": scale.run_scale_db, "prune": scale.run_prune,
}

# (figure, direction, target, what): direction ">=" means higher is better
TARGETS: list[tuple[str, str, float, str]] = [
    ("w1_executions_per_s", ">=", 2000.0, "W1 executions/s"),
    ("w2_p50_ms", "<=", 2.0, "W2 signal round trip p50 (ms)"),
    ("w2_p99_ms", "<=", 10.0, "W2 signal round trip p99 (ms)"),
    ("w2_last_over_first", "<=", 1.5, "W2 last/first window median"),
    ("w3a_p99_ms", "<=", 5.0, "W3a staggered wake-up lateness p99 (ms)"),
    ("w3b_p99_ms", "<=", 10.0, "W3b simultaneous wake-up lateness p99 (ms)"),
    ("w4_replay_ms", "<=", 150.0, "W4 replay of 10,000 steps (ms)"),
    ("restart_s", "<=", 1.0, "restart: new process to re-run (s)"),
    ("cli_status_json_p50_ms", "<=", 150.0, "cli: status ID --json, median wall (ms)"),
    ("cli_status_json_p90_ms", "<=", 150.0, "cli: status ID --json, p90 wall (ms)"),
    *system.TARGETS, *parked.TARGETS, *scale.TARGETS,
]

LABELS: dict[str, str] = {
    "ceiling_commits_per_s": "raw single-row commits/s",
    "ceiling_commit_us": "raw commit (us)",
    "w1_executions_per_s": "executions/s",
    "w1_steps_per_s": "steps/s",
    "w1_total_s": "total (s)",
    "w1_all_started_s": "all start_execution committed (s)",
    "w1_wait_api_executions_per_s": "executions/s, 1 service.wait() each",
    "w2_p50_ms": "round trip p50 (ms)",
    "w2_p99_ms": "round trip p99 (ms)",
    "w2_max_ms": "round trip max (ms)",
    "w2_first_window_median_ms": "first window median (ms)",
    "w2_last_window_median_ms": "last window median (ms)",
    "w2_last_over_first": "last / first window",
    "w3a_p50_ms": "staggered lateness p50 (ms)",
    "w3a_p99_ms": "staggered lateness p99 (ms)",
    "w3a_max_ms": "staggered lateness max (ms)",
    "w3a_resume_p50_ms": "staggered body resumed p50 (ms)",
    "w3a_resume_p99_ms": "staggered body resumed p99 (ms)",
    "w3a_due_spread_s": "staggered due times spread (s)",
    "w3b_p50_ms": "simultaneous lateness p50 (ms)",
    "w3b_p99_ms": "simultaneous lateness p99 (ms)",
    "w3b_max_ms": "simultaneous lateness max (ms)",
    "w3b_resume_p50_ms": "simultaneous body resumed p50 (ms)",
    "w3b_resume_p99_ms": "simultaneous body resumed p99 (ms)",
    "w3b_due_spread_s": "simultaneous due times spread (s)",
    "w4_run_s": "first run, start to last step (s)",
    "w4_steps_per_s": "sequential steps/s",
    "w4_total_s": "start to completed (s)",
    "w4_replay_ms": "replay: load_history + replay (ms)",
    "w4_load_history_ms": "  load_history (ms)",
    "w4_replay_fn_ms": "  workflow replay (ms)",
    "w4_second_run_replay_ms": "in-service 2nd run, body only (ms)",
    "w4_park_to_resumed_ms": "park sleep(0) to resumed (ms)",
    "restart_s": "new process to re-run (s)",
    "restart_interpreter_s": "  interpreter start (s)",
    "restart_imports_s": "  imports (s)",
    "restart_recover_to_rerun_s": "  open, recover, claim, re-run (s)",
    "cli_status_json_p50_ms": "status ID --json, median wall (ms)",
    "cli_status_json_p90_ms": "status ID --json, p90 wall (ms)",
    "cli_status_json_min_ms": "status ID --json, fastest (ms)",
    "cli_python_startup_ms": "  python -c pass, median (ms)",
    **system.LABELS, **parked.LABELS, **scale.LABELS,
}


def _fs_type(path: Path) -> str:
    """The filesystem of ``path`` from /proc/mounts (fsync is free on a tmpfs)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and str(path).startswith(parts[1]) and \
                        len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _run_one(name: str, folder: Path, synchronous: str, sizes: Sizes) -> Result:
    coroutines: dict[str, Callable[..., Any]] = {"W1": run_w1, "W2": run_w2, "W3": run_w3,
                                                 "W4": run_w4}
    # each workload starts from a quiet disk and heap: the dirty pages and garbage of the one
    # before must not be written back or collected during this one's measurements
    os.sync()
    gc.collect()
    started = time.perf_counter()
    try:
        if name == "ceiling":
            result = run_ceiling(folder, synchronous, sizes)
        elif name == "restart":
            result = run_restart(folder, synchronous, timeout=min(sizes.timeout_s, 60.0))
        elif name == "cli":
            result = run_cli(folder, synchronous, sizes.cli_runs)
        elif name in SYSTEM_WORKLOADS:
            result = SYSTEM_WORKLOADS[name](folder, synchronous, sizes)
        else:
            result = asyncio.run(asyncio.wait_for(
                coroutines[name](folder, synchronous, sizes), sizes.timeout_s))
    except Exception as exc:
        traceback.print_exc()
        result = Result(name)
        result.problems.append(f"{name} raised {type(exc).__name__}: {exc}")
    result.diagnostics["elapsed_s"] = round(time.perf_counter() - started, 3)
    print(f"  {name:<8} done in {result.diagnostics['elapsed_s']:.1f}s"
          f"{'' if result.verified else '  (CHECKS FAILED)'}", file=sys.stderr, flush=True)
    return result


def _targets(figures: dict[str, float], synchronous: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, direction, target, what in TARGETS:
        value = figures.get(key)
        if value is None or not math.isfinite(value):
            continue
        ratio = value / target
        met = ratio >= 1.0 if direction == ">=" else ratio <= 1.0
        out[key] = {"what": what, "figure": round(value, 4), "target": target,
                    "direction": direction, "ratio": round(ratio, 4), "met": met,
                    "applies": synchronous == "FULL"}
    return out


def _format(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _table(results: list[Result], targets: dict[str, dict[str, Any]], header: list[str]) -> str:
    lines = list(header)
    lines.append("")
    lines.append(f"{'workload':<9} {'figure':<38} {'value':>12}  {'target':>10} {'ratio':>7}  "
                 "status")
    lines.append("-" * 88)
    for result in results:
        for key, value in result.figures.items():
            label = LABELS.get(key, key)
            target = targets.get(key)
            if target is None:
                lines.append(f"{result.name:<9} {label:<38} {_format(value):>12}")
                continue
            status = "ok" if target["met"] else "MISS"
            lines.append(f"{result.name:<9} {label:<38} {_format(value):>12}  "
                         f"{target['direction'] + ' ' + _format(target['target']):>10} "
                         f"{target['ratio']:>7.3f}  {status}")
        checks = "verified" if result.verified else "CHECKS FAILED"
        extra = ""
        commits = result.diagnostics.get("commits")
        if commits:
            extra = (f"; {commits} commits for {result.diagnostics['write_jobs']} write jobs "
                     f"({result.diagnostics['jobs_per_commit']} per commit)")
        lines.append(f"{result.name:<9} {'self-check':<38} {checks:>12}  "
                     f"({result.checked} executions checked{extra})")
        for note in result.notes:
            lines.append(f"{'':<9} note: {note}")
        for problem in result.problems[:10]:
            lines.append(f"{'':<9} PROBLEM: {problem}")
        if len(result.problems) > 10:
            lines.append(f"{'':<9} ... and {len(result.problems) - 10} more problems")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synchronous", default="FULL", type=str.upper,
                        choices=["FULL", "NORMAL"])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every workload runs and verifies")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(WORKLOADS)} (the ceiling "
                             "is always measured)")
    parser.add_argument("--dir", default=None,
                        help="folder in which the temporary benchmark folder is made")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")

    wanted = {w.strip().lower() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {w.lower() for w in WORKLOADS}
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    selected = [w for w in WORKLOADS if not wanted or w.lower() in wanted or w == "ceiling"]
    sizes = QUICK if args.quick else FULL
    synchronous: str = args.synchronous

    started = time.perf_counter()
    load_before = _load()
    folder = Path(tempfile.mkdtemp(prefix="durablectl-bench-", dir=args.dir)).resolve()
    try:
        probe = open_store(folder, "probe", synchronous)
        try:
            pragmas = read_pragmas(probe)
        finally:
            probe.close()
        print(f"durablectl bench: {', '.join(selected)} in {folder} "
              f"({'quick' if args.quick else 'full'}, synchronous={synchronous})",
              file=sys.stderr, flush=True)
        results = [_run_one(name, folder, synchronous, sizes) for name in selected]
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started

    figures: dict[str, float] = {}
    for result in results:
        figures.update(result.figures)
    ceiling = figures.get("ceiling_commits_per_s")
    if ceiling and "w1_executions_per_s" in figures:
        figures["w1_executions_per_ceiling_commit"] = figures["w1_executions_per_s"] / ceiling
        figures["w1_steps_per_ceiling_commit"] = figures["w1_steps_per_s"] / ceiling
    if ceiling and "daemon_steps_per_s" in figures:  # the daemon workload's ratio, same ceiling
        figures["daemon_steps_per_ceiling_commit"] = figures["daemon_steps_per_s"] / ceiling
    targets = _targets(figures, synchronous)
    environment = {
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(), "cpus": os.cpu_count(), "folder": str(folder),
        "filesystem": _fs_type(folder), "load_average_before": load_before,
        "load_average_after": _load(),
    }
    header = [
        f"durablectl benchmark ({'quick' if args.quick else 'full'}), "
        f"synchronous={synchronous}" + ("" if synchronous == "FULL" else
                                        "  (targets are defined at FULL)"),
        "pragmas in force (read back): " + ", ".join(f"{k}={v}" for k, v in pragmas.items()),
        f"python {environment['python']}, sqlite {environment['sqlite']}, "
        f"{environment['cpus']} CPUs, {environment['filesystem']} at {folder}",
        f"load average (1 min) before {load_before}, after {environment['load_average_after']}"
        " (other work on the machine skews every figure)",
    ]
    print(_table(results, targets, header))
    for result in results:  # one JSON line per workload, for pipelines that want one figure
        print(json.dumps({"workload": result.name, **result.to_json(),
                          "targets": {k: t for k, t in targets.items() if k in result.figures}},
                         separators=(",", ":"), default=str))
    verified = all(r.verified for r in results)
    missed = [k for k, t in targets.items() if not t["met"]]
    print(f"all self-checks passed: {'yes' if verified else 'NO'}; targets met: "
          f"{len(targets) - len(missed)}/{len(targets)}; {elapsed:.1f}s")
    report = {
        "benchmark": "durablectl", "quick": args.quick, "synchronous": synchronous,
        "pragmas": pragmas, "environment": environment, "workloads_run": selected,
        "figures": {k: round(v, 4) if math.isfinite(v) else None for k, v in figures.items()},
        "targets": targets, "ratios": {k: t["ratio"] for k, t in targets.items()},
        "targets_missed": missed, "verified": verified,
        "results": {r.name: r.to_json() for r in results}, "elapsed_s": round(elapsed, 2),
    }
    print(json.dumps(report, separators=(",", ":"), default=str), flush=True)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
