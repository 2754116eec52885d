"""The benchmark runs and checks its own work (tiny ``--quick`` sizes; no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr}"
    report = json.loads(lines[-1])  # the last line is the one JSON line
    return proc, report


def test_quick_bench_runs_every_workload_and_verifies(tmp_path: Path) -> None:
    proc, report = _bench(tmp_path=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert report["quick"] is True
    assert report["verified"] is True
    assert report["synchronous"] == "FULL"
    assert report["pragmas"] == {"journal_mode": "wal", "synchronous": "FULL",
                                 "busy_timeout": report["pragmas"]["busy_timeout"]}
    assert report["pragmas"]["busy_timeout"] > 0
    results = report["results"]
    assert set(results) == {"ceiling", "W1", "W2", "W3", "W4", "restart", "cli", "daemon",
                            "cli_signal", "parked", "scale", "prune"}
    for name, result in results.items():
        assert result["verified"], (name, result["problems"])
        assert result["checked_executions"] > 0, name
        assert result["problem_count"] == 0, name
    # W1 checked all of its executions, W3 both of its groups
    assert results["W1"]["checked_executions"] >= 2
    assert results["W3"]["checked_executions"] >= 2
    # every target has a figure and a ratio (their values are not judged here)
    figures = report["figures"]
    for key, target in report["targets"].items():
        assert isinstance(figures[key], float | int) and math.isfinite(figures[key]), key
        assert target["ratio"] == report["ratios"][key]
    assert set(report["targets"]) == {
        "w1_executions_per_s", "w2_p50_ms", "w2_p99_ms", "w2_last_over_first", "w3a_p99_ms",
        "w3b_p99_ms", "w4_replay_ms", "restart_s", "cli_status_json_p50_ms",
        "cli_status_json_p90_ms", "daemon_executions_per_s", "daemon_executions_per_s_normal",
        "cli_signal_wall_p50_ms", "cli_signal_to_step_p50_ms", "parked_rss_mb",
        "parked_peak_rss_mb", "parked_p99_ms", "scale_cli_status_ms", "scale_cli_status_json_ms",
        "scale_cli_list_failed_ms", "scale_cli_list_failed_json_ms", "scale_bytes_per_execution",
        "prune_longest_batch_ms", "prune_stall_max_ms"}
    # one JSON line per workload before the summary line
    per_workload = [json.loads(line) for line in proc.stdout.splitlines()
                    if line.startswith('{"workload":')]
    assert [line["workload"] for line in per_workload] == list(results)
    assert "ceiling_commits_per_s" in figures
    # the plain-text table comes first, with the pragmas read back
    assert "pragmas in force (read back): journal_mode=wal, synchronous=FULL" in proc.stdout
    assert "self-check" in proc.stdout
    # nothing left behind in the folder it was given
    assert list(tmp_path.iterdir()) == []


def test_quick_bench_only_and_synchronous_normal(tmp_path: Path) -> None:
    proc, report = _bench("--only", "W1", "--synchronous", "NORMAL", tmp_path=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert report["workloads_run"] == ["ceiling", "W1"]
    assert report["pragmas"]["synchronous"] == "NORMAL"
    assert report["results"]["W1"]["diagnostics"]["pragmas"]["synchronous"] == "NORMAL"
    assert report["results"]["ceiling"]["diagnostics"]["pragmas"]["synchronous"] == "NORMAL"
    assert report["verified"] is True
    assert set(report["targets"]) == {"w1_executions_per_s"}
