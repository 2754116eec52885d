"""The execution commands of SPEC §6: start, signal, status, show, list, wait, cancel, recover,
workflows. Output modes, JSON shapes, exit codes and one-line errors.

In-process with typer's ``CliRunner`` where no worker is needed (executions are moved along
through the store, as a worker would), and as real processes of ``.venv/bin/durablectl``
against a daemon started once for the module (always stopped at the end) for the runs that
need one. Every process gets its own XDG dirs, so nothing touches the user's. No test depends
on timing: waits are on conditions with generous time-outs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from durablectl import DurableClient, SqliteStore
from durablectl.cli import fast, render
from durablectl.cli.app import app
from durablectl.daemon.ipc import nudge
from durablectl.daemon.paths import socket_for
from durablectl.model import AuditEntry, ErrorInfo, Execution, ExecutionDetail, StepRecord

from .conftest import isolate_user_dirs

ROOT = Path(__file__).resolve().parent.parent
DURABLECTL = ROOT / ".venv" / "bin" / "durablectl"
TIMEOUT = 15.0

needs_script = pytest.mark.skipif(not DURABLECTL.exists(), reason="needs `make install`")

EXECUTION_KEYS = {"execution_id", "workflow_id", "status", "status_reason", "attempt",
                  "max_attempts", "input", "result", "error", "created_at", "updated_at"}
STEP_KEYS = {"step_id", "kind", "result", "error", "started_at", "completed_at", "duration_ms",
             "attempt"}
AUDIT_KEYS = {"seq", "at", "kind", "execution_id", "attempt", "data"}
COLOUR = re.compile(r"\x1b\[([0-9;]*)m")

WORKFLOWS = '''
from durablectl import Signal, workflow

Go = Signal("go")


@workflow("cli.echo.v1", alias="cli.echo")
async def echo(ctx, data):
    return await ctx.step("echo", lambda: data)


@workflow("cli.gate.v1")
async def gate(ctx, data):
    first = await ctx.step("first", lambda: data["n"] + 1)
    await ctx.sleep(0.01, step_id="nap")
    got = await ctx.wait_for_signal(Go, step_id="go")
    await ctx.note("got it", {"got": got})
    return {"first": first, "got": got}


def _boom():
    raise ValueError("kaput")


@workflow("cli.fail.v1")
async def fail(ctx, data):
    await ctx.step("boom", _boom)
'''


# -- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_user_dirs(tmp_path, monkeypatch, "cli.db")


class Out:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]

    def __repr__(self) -> str:
        return f"Out(code={self.code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def cli(db: Path, *args: str, input: str | None = None) -> Out:
    """In process, as typer's runner calls the app; --db goes after the command's own args."""
    result = CliRunner().invoke(app, [*args, "--db", str(db)], input=input,
                                catch_exceptions=False)
    return Out(result.exit_code, result.stdout, result.stderr)


def open_store(db: Path) -> SqliteStore:
    return SqliteStore(db)


def stored(db: Path, execution_id: str) -> Execution:
    with open_store(db) as store:
        found = store.get_execution(execution_id)
    assert found is not None
    return found


def create(db: Path, workflow: str = "cli.echo.v1", data: Any = None, **options: Any) -> str:
    with open_store(db) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DurableClient(store).start_execution(workflow, data, **options)


def finish(db: Path, execution_id: str, *, status: str = "completed", result: Any = None,
           error: ErrorInfo | None = None, failed_step: str | None = None) -> None:
    """Move an execution along through the store, as a worker does."""
    now = time.time()
    with open_store(db) as store:
        workflow_id = store.get_execution(execution_id).workflow_id  # type: ignore[union-attr]
        claim = store.claim_execution(execution_id, worker_id="w-test", workflow_ids=[workflow_id],
                                      now=now, real_now=now, lease_until=now + 30)
        assert claim is not None
        store.record_step(execution_id=execution_id, worker_id="w-test", step_id="first",
                          kind="step", result_json='{"v":1}', error=None, attempt=1,
                          started_at=now, completed_at=now + 0.002, now=now + 0.002,
                          audit_entries=[("step_completed", {"step_id": "first",
                                                             "duration_ms": 2.0,
                                                             "internal": False})])
        if failed_step:
            store.record_step(execution_id=execution_id, worker_id="w-test",
                              step_id=failed_step, kind="step", result_json=None, error=error,
                              attempt=1, started_at=now, completed_at=now + 0.003,
                              now=now + 0.003,
                              audit_entries=[("step_completed", {
                                  "step_id": failed_step, "internal": False,
                                  "error": error.type if error else "Error",
                                  "duration_ms": 3.0})])
        assert store.finish(execution_id=execution_id, worker_id="w-test", status=status,
                            result_json=None if result is None else json.dumps(result),
                            error=error, reason=None, now=now + 0.004)


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text[:-1]


def ok(out: Out) -> Out:
    assert out.code == 0, out
    return out


def error(out: Out, code: int) -> str:
    """The one error line of a command that failed with ``code`` and printed nothing."""
    assert (out.code, out.stdout) == (code, ""), out
    line = one_line(out.stderr)
    assert line.startswith("error: "), line
    return line


# -- start ------------------------------------------------------------------------------------
def test_start_without_a_daemon_prints_the_id_alone_and_a_note(db: Path) -> None:
    out = cli(db, "start", "cli.echo.v1", "--input", '{"a": [1, 2]}')
    assert out.code == 0, out
    execution_id = one_line(out.stdout)
    assert re.fullmatch(r"[0-9a-f]{24}", execution_id)
    assert one_line(out.stderr) == (
        f"note: no daemon is running for {db}: execution {execution_id} is queued and starts "
        "when one runs (durablectl daemon start)")
    execution = stored(db, execution_id)
    assert (execution.workflow_id, execution.status, execution.input) == (
        "cli.echo.v1", "pending", {"a": [1, 2]})


def test_start_json_is_the_execution_id_object(db: Path) -> None:
    out = cli(db, "start", "cli.echo.v1", "--json")
    assert out.code == 0, out
    data = out.json()
    assert list(data) == ["execution_id"]
    assert stored(db, data["execution_id"]).input is None


def test_start_reads_the_input_from_stdin_and_from_a_file(db: Path, tmp_path: Path) -> None:
    from_stdin = one_line(cli(db, "start", "cli.echo.v1", "--input", "-",
                              input='{"from": "stdin"}\n').stdout)
    assert stored(db, from_stdin).input == {"from": "stdin"}
    path = tmp_path / "input.json"
    path.write_text('[1, "two", null]')
    from_file = one_line(cli(db, "start", "cli.echo.v1", "-i", f"@{path}").stdout)
    assert stored(db, from_file).input == [1, "two", None]


def test_start_with_an_idempotency_key_prints_the_same_id(db: Path) -> None:
    first = cli(db, "start", "cli.echo.v1", "--idempotency-key", "order-7", "--input", "1")
    again = cli(db, "start", "cli.echo.v1", "--idempotency-key", "order-7", "--input", "2")
    assert first.code == again.code == 0
    assert first.stdout == again.stdout
    assert stored(db, one_line(first.stdout)).input == 1


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["start", "wf", "--input", "{nope"], None,
     "--input is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
     "column 2"),
    (["start", "wf", "--input", "-"], "[1,", "--input is not valid JSON (from stdin): Expecting "
                                             "value at line 1 column 4"),
    (["signal", "e1", "go", "--payload", "tru"], None,
     "--payload is not valid JSON: Expecting value at line 1 column 1"),
    (["start", "wf", "--input", "@missing.json"], None,
     "cannot read --input from missing.json: No such file or directory"),
])
def test_bad_json_is_exit_2_with_one_line_naming_the_problem(
        db: Path, args: list[str], stdin: str | None, message: str) -> None:
    out = cli(db, *args, input=stdin)
    assert (out.code, out.stdout) == (2, ""), out
    assert one_line(out.stderr) == f"error: {message}"
    assert not db.exists()  # refused before anything was opened


def test_bad_json_in_a_file_names_the_file(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,}')
    out = cli(db, "start", "wf", "--input", f"@{path}")
    assert out.code == 2
    assert one_line(out.stderr) == (f"error: --input is not valid JSON (from {path}): Expecting "
                                    "property name enclosed in double quotes at line 1 column 9")


def test_an_unknown_workflow_is_exit_3_once_a_worker_recorded_its_workflows(db: Path) -> None:
    with open_store(db) as store:
        store.record_workflows(worker_id="w1", workflows=[("cli.echo.v1", "cli.echo"),
                                                          ("cli.gate.v1", None)], now=1.0)
    out = cli(db, "start", "cli.ecoh.v1")
    assert (out.code, out.stdout) == (3, "")
    assert one_line(out.stderr) == ("error: unknown workflow 'cli.ecoh.v1' (known: cli.echo.v1, "
                                    "cli.gate.v1)")
    by_alias = cli(db, "start", "cli.echo")
    assert by_alias.code == 0
    assert stored(db, one_line(by_alias.stdout)).workflow_id == "cli.echo.v1"


# -- signal -----------------------------------------------------------------------------------
def test_signal_prints_nothing_or_its_json_and_notes_that_no_daemon_runs(db: Path) -> None:
    execution_id = create(db)
    out = cli(db, "signal", execution_id, "go", "--payload", '{"ok": true}')
    assert (out.code, out.stdout) == (0, "")
    assert one_line(out.stderr) == (
        f"note: no daemon is running for {db}: signal go is stored for execution "
        f"{execution_id} and is delivered when one runs")
    again = cli(db, "signal", execution_id, "go", "--json")
    assert again.code == 0
    assert again.json() == {"execution_id": execution_id, "signal": "go", "seq": 2}
    other = cli(db, "signal", execution_id, "other", "--json", "-p", "-", input="[3]")
    assert other.json()["seq"] == 1


def test_signal_of_a_finished_execution_is_exit_2(db: Path) -> None:
    execution_id = create(db)
    assert cli(db, "cancel", execution_id).code == 0
    out = cli(db, "signal", execution_id, "go")
    assert (out.code, out.stdout) == (2, "")
    assert one_line(out.stderr) == (
        f"error: cannot signal execution {execution_id}: it is cancelled (accepted: pending, "
        "running, sleeping, waiting, retrying)")


# -- status, show, list -----------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["status"], ["show"], ["wait", "--timeout", "1"], ["cancel"], ["signal", "go"]])
def test_an_unknown_execution_is_exit_3(db: Path, command: list[str]) -> None:
    create(db)  # the database exists
    args = [command[0], "nope", *command[1:]]
    out = cli(db, *args)
    assert (out.code, out.stdout) == (3, ""), out
    assert one_line(out.stderr) == "error: unknown execution 'nope'"


@pytest.mark.parametrize("command", [["status", "x"], ["show", "x"], ["wait", "x"]])
def test_read_commands_do_not_create_a_missing_database(db: Path, command: list[str]) -> None:
    out = cli(db, *command)
    assert out.code == 3
    assert one_line(out.stderr) == "error: unknown execution 'x'"
    assert not db.exists()


def test_status_json_and_plain(db: Path) -> None:
    execution_id = create(db, data={"k": "v"})
    data = cli(db, "status", execution_id, "--json").json()
    assert set(data) >= EXECUTION_KEYS
    assert (data["execution_id"], data["status"], data["input"], data["error"]) == (
        execution_id, "pending", {"k": "v"}, None)
    assert data["created_at"].endswith("Z")
    plain = cli(db, "status", execution_id)
    assert plain.code == 0 and plain.stderr == ""
    rows = dict(line.split("\t", 1) for line in plain.stdout.splitlines())
    assert rows["execution"] == execution_id
    assert rows["status"] == "pending"
    assert rows["attempt"] == "1/3"
    assert rows["input"] == '{"k":"v"}'
    assert "\x1b" not in plain.stdout


def test_status_and_show_exit_0_for_a_failed_execution(db: Path) -> None:
    execution_id = create(db)
    finish(db, execution_id, status="failed", error=ErrorInfo("ValueError", "kaput", "tb"))
    for command in ("status", "show"):
        out = cli(db, command, execution_id)
        assert out.code == 0 and out.stderr == "", out
    rows = dict(line.split("\t", 1)
                for line in cli(db, "status", execution_id).stdout.splitlines())
    assert (rows["status"], rows["error"]) == ("failed", "ValueError: kaput")


def test_show_json_has_the_execution_its_steps_and_its_audit(db: Path) -> None:
    execution_id = create(db, data=5)
    finish(db, execution_id, result={"done": True})
    data = cli(db, "show", execution_id, "--json").json()
    assert list(data) == ["execution", "steps", "audit"]
    assert set(data["execution"]) >= EXECUTION_KEYS
    assert data["execution"]["result"] == {"done": True}
    assert [s["step_id"] for s in data["steps"]] == ["first"]
    assert set(data["steps"][0]) >= STEP_KEYS
    assert data["steps"][0]["duration_ms"] == pytest.approx(2.0, abs=0.01)
    assert all(set(a) >= AUDIT_KEYS for a in data["audit"])
    assert [(a["data"].get("from"), a["data"].get("to")) for a in data["audit"]
            if a["kind"] == "execution_status_changed"] == [
        (None, "pending"), ("pending", "running"), ("running", "completed")]


def test_show_plain_prints_the_timeline_and_errors_in_full(db: Path) -> None:
    execution_id = create(db)
    error = ErrorInfo("ValueError", "kaput", "Traceback (most recent call last):\n  line 1\n"
                                             "ValueError: kaput\n")
    finish(db, execution_id, status="failed", error=error, failed_step="boom")
    out = cli(db, "show", execution_id)
    assert out.code == 0 and out.stderr == ""
    head, timeline, *failures = out.stdout.split("\n\n")
    assert "status\tfailed" in head.splitlines()
    lines = timeline.splitlines()
    assert lines[0] == "at\tkind\tstep_id\tduration_ms\tattempt\tdetail"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 6 for row in rows)
    assert [(r[1], r[2], r[5]) for r in rows] == [
        ("status", "", "pending: created"),
        ("status", "", "pending → running: claimed"),
        ("step", "first", '→ {"v":1}'),
        ("step", "boom", "ValueError: kaput"),
        ("status", "", "running → failed"),
    ]
    assert rows[2][3] == "2"  # duration in milliseconds
    assert failures[0].splitlines() == [
        "failure of step 'boom' (attempt 1): ValueError: kaput",
        "Traceback (most recent call last):", "  line 1", "ValueError: kaput"]
    assert failures[1].startswith(f"failure of execution {execution_id} (attempt 1): "
                                  "ValueError: kaput\n")


def test_list_plain_json_filters_and_paging(db: Path) -> None:
    with open_store(db) as store:
        store.record_workflows(worker_id="w1", workflows=[("cli.echo.v1", "cli.echo"),
                                                          ("cli.gate.v1", None)], now=1.0)
    echo = [create(db, "cli.echo.v1", i) for i in range(3)]
    gate = create(db, "cli.gate.v1")
    finish(db, echo[0], result=0)
    plain = cli(db, "list")
    assert plain.code == 0 and plain.stderr == ""
    lines = plain.stdout.splitlines()
    assert lines[0] == ("execution_id\tworkflow_id\tstatus\tattempt\tcreated_at\tupdated_at\t"
                        "status_reason")
    assert [line.split("\t")[0] for line in lines[1:]] == [gate, *reversed(echo)]
    assert [line.split("\t")[2] for line in lines[1:]] == [
        "pending", "pending", "pending", "completed"]

    rows = cli(db, "list", "--json").lines()
    assert [r["execution_id"] for r in rows] == [gate, *reversed(echo)]
    assert all(set(r) >= EXECUTION_KEYS for r in rows)
    assert [r["execution_id"] for r in cli(db, "list", "--json", "--status",
                                           "completed").lines()] == [echo[0]]
    assert [r["execution_id"] for r in cli(db, "list", "--json", "-s",
                                           "pending,completed", "-w", "cli.echo").lines()] == \
        list(reversed(echo))
    assert len(cli(db, "list", "--json", "--status", "active").lines()) == 3

    page = cli(db, "list", "--limit", "2")
    assert len(page.stdout.splitlines()) == 3
    assert one_line(page.stderr) == "note: more executions: --offset 2"
    rest = cli(db, "list", "--limit", "2", "--offset", "2", "--json")
    assert [r["execution_id"] for r in rest.lines()] == [echo[1], echo[0]]
    assert rest.stderr == ""

    bad = cli(db, "list", "--status", "done")
    assert bad.code == 2
    assert one_line(bad.stderr) == (
        "error: unknown status 'done' for --status (use pending, running, sleeping, waiting, "
        "retrying, completed, failed, compensation_failed, cancelled, active or finished)")
    assert cli(db, "list", "--limit", "-1").code == 2


def test_list_and_workflows_on_a_missing_database_print_headers_only(db: Path) -> None:
    assert cli(db, "list").stdout == LIST_HEADER_LINE
    assert cli(db, "list", "--json").stdout == ""
    assert cli(db, "workflows").stdout == "workflow_id\talias\tin_flight\n"
    assert not db.exists()


LIST_HEADER_LINE = "\t".join(render.LIST_HEADER) + "\n"


def test_workflows_counts_the_executions_in_flight(db: Path) -> None:
    with open_store(db) as store:
        store.record_workflows(worker_id="w1", workflows=[("cli.echo.v1", "cli.echo"),
                                                          ("cli.gate.v1", None)], now=1.0)
    create(db, "cli.echo.v1")
    finish(db, create(db, "cli.echo.v1"), result=1)
    create(db, "cli.gate.v1")
    cancelled = create(db, "cli.gate.v1")
    cli(db, "cancel", cancelled)
    out = cli(db, "workflows", "--json")
    assert out.code == 0
    assert out.lines() == [
        {"workflow_id": "cli.echo.v1", "alias": "cli.echo", "in_flight": 1},
        {"workflow_id": "cli.gate.v1", "alias": None, "in_flight": 1},
    ]
    assert cli(db, "workflows").stdout == (
        "workflow_id\talias\tin_flight\ncli.echo.v1\tcli.echo\t1\ncli.gate.v1\t\t1\n")


# -- cancel, wait, recover --------------------------------------------------------------------
def test_cancel_prints_the_execution_and_refuses_a_finished_one(db: Path) -> None:
    execution_id = create(db)
    out = cli(db, "cancel", execution_id, "--reason", "not needed", "--json")
    assert out.code == 0 and out.stderr == ""
    data = out.json()
    assert (data["execution_id"], data["status"], data["status_reason"]) == (
        execution_id, "cancelled", "not needed")
    other = create(db)
    assert cli(db, "cancel", other).stdout == f"cancelled {other}\n"
    again = cli(db, "cancel", execution_id)
    assert (again.code, again.stdout) == (2, "")
    assert one_line(again.stderr) == (
        f"error: cannot cancel execution {execution_id}: it is cancelled (accepted: pending, "
        "running, sleeping, waiting, retrying)")


def test_wait_prints_the_result_or_the_execution(db: Path) -> None:
    execution_id = create(db)
    finish(db, execution_id, result={"total": 3})
    out = cli(db, "wait", execution_id)
    assert (out.code, out.stdout, out.stderr) == (0, '{"total":3}\n', "")
    data = cli(db, "wait", execution_id, "--json").json()
    assert (data["status"], data["result"]) == ("completed", {"total": 3})


def test_wait_times_out_with_exit_5(db: Path) -> None:
    execution_id = create(db)
    out = cli(db, "wait", execution_id, "--timeout", "0.05")
    assert (out.code, out.stdout) == (5, "")
    assert one_line(out.stderr) == f"error: execution {execution_id} still pending after " \
                                   "waiting 0.05s"
    bad = cli(db, "wait", execution_id, "--timeout", "soon")
    assert bad.code == 2
    assert one_line(bad.stderr) == "error: bad duration 'soon': use seconds or 30s, 10m, 2h, 1d"


def test_wait_on_a_cancelled_or_failed_execution_is_exit_1(db: Path) -> None:
    cancelled = create(db)
    cli(db, "cancel", cancelled, "--reason", "changed my mind")
    out = cli(db, "wait", cancelled)
    assert (out.code, out.stdout) == (1, "")
    assert one_line(out.stderr) == f"error: execution {cancelled} was cancelled: changed my mind"
    as_json = cli(db, "wait", cancelled, "--json")
    assert as_json.code == 1
    assert as_json.json()["status"] == "cancelled"  # the execution object, then the error line
    assert one_line(as_json.stderr).startswith("error: ")

    failed = create(db)
    finish(db, failed, status="failed", error=ErrorInfo("ValueError", "kaput", None))
    out = cli(db, "wait", failed)
    assert (out.code, out.stdout) == (1, "")
    assert one_line(out.stderr) == f"error: execution {failed} failed: ValueError: kaput"


def test_recover_prints_how_many(db: Path) -> None:
    create(db)
    assert cli(db, "recover").stdout == "recovered 0 executions\n"
    assert cli(db, "recover", "--json").json() == {"recovered": 0}


def test_a_file_that_is_not_a_database_is_exit_6(db: Path) -> None:
    db.write_text("hello, not SQLite\n" * 100)
    out = cli(db, "status", "x")
    assert (out.code, out.stdout) == (6, "")
    assert one_line(out.stderr).startswith(f"error: {db} is not a durablectl database")


def test_debug_adds_the_traceback_before_the_error_line(db: Path) -> None:
    create(db)
    out = cli(db, "status", "nope", "--debug")
    assert out.code == 3
    assert out.stderr.startswith("Traceback (most recent call last):")
    assert out.stderr.endswith("error: unknown execution 'nope'\n")


# -- the timeline -----------------------------------------------------------------------------
def test_the_timeline_has_a_row_per_event_with_durations() -> None:
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def at(ms: float) -> datetime:
        return t0 + timedelta(milliseconds=ms)

    entries = [
        ("execution_status_changed", 0, {"from": None, "to": "pending", "reason": "created"}),
        ("execution_status_changed", 5, {"from": "pending", "to": "running",
                                         "reason": "claimed"}),
        ("step_completed", 7, {"step_id": "charge", "duration_ms": 1.5, "internal": False}),
        ("sleep_scheduled", 8, {"step_id": "__sleep:0", "due_at": "2030-01-01T12:00:01Z"}),
        ("sleep_completed", 1008, {"step_id": "__sleep:0"}),
        ("signal_waiting", 1010, {"step_id": "approval", "signal": "approved",
                                  "timeout_at": None}),
        ("signal_delivered", 1510, {"step_id": "approval", "signal": "approved", "seq": 1}),
        ("emit_published", 1511, {"step_id": "__emit:shipped:0", "event": "shipped"}),
        ("switch_evaluated", 1512, {"step_id": "route", "branch": "express"}),
        ("note", 1513, {"message": "shipped", "meta": {"carrier": "dhl"}}),
        ("step_completed", 1514, {"step_id": "flaky", "internal": False, "error": "OSError",
                                  "duration_ms": 0.5}),
        ("execution_status_changed", 1515, {"from": "running", "to": "retrying",
                                            "reason": "attempt 1 failed"}),
        ("signal_waiting", 1600, {"step_id": "late", "signal": "x", "timeout_at": "T"}),
        ("signal_timed_out", 1700, {"step_id": "late", "signal": "x"}),
        ("step_completed", 1701, {"step_id": "rollback:charge", "internal": True,
                                  "duration_ms": 0.2}),
        ("operator_action", 1800, {"action": "force-fail", "actor": "ops", "reason": "stuck",
                                   "step_id": None}),
    ]
    audit = [AuditEntry(seq=i + 1, at=at(ms), kind=kind, execution_id="e1", attempt=1, data=data)
             for i, (kind, ms, data) in enumerate(entries)]
    steps = [
        StepRecord("charge", "step", {"id": 9}, None, at(5.5), at(7), 1.5, 1, 1),
        StepRecord("approval", "signal", {"ok": True}, None, at(1010), at(1510), 500.0, 1, 3),
        StepRecord("route", "switch", "fast", None, at(1511.5), at(1512), 0.5, 1, 5),
        StepRecord("flaky", "step", None, ErrorInfo("OSError", "disk full", "tb"), at(1513.5),
                   at(1514), 0.5, 1, 6),
        StepRecord("rollback:charge", "rollback", None, None, at(1701), at(1701.2), 0.2, 1, 7),
    ]
    execution = Execution("e1", "wf", "failed", "stuck", 1, 3, None, None,
                          ErrorInfo("Forced", "stuck", None), t0, at(1800))
    rows = render.timeline(ExecutionDetail(execution, steps, audit))
    assert [(r.kind, r.step_id, r.detail) for r in rows] == [
        ("status", None, "pending: created"),
        ("status", None, "pending → running: claimed"),
        ("step", "charge", '→ {"id":9}'),
        ("sleep", "__sleep:0", "until 2030-01-01T12:00:01Z"),
        ("woke", "__sleep:0", "sleep over"),
        ("wait", "approval", "for signal approved"),
        ("signal", "approval", 'signal approved #1 → {"ok":true}'),
        ("emit", "__emit:shipped:0", "event shipped"),
        ("switch", "route", "branch express"),
        ("note", None, 'shipped {"carrier":"dhl"}'),
        ("step", "flaky", "OSError: disk full"),
        ("retry", None, "running → retrying: attempt 1 failed"),
        ("wait", "late", "for signal x, time-out at T"),
        ("time-out", "late", "no signal x in time"),
        ("rollback", "rollback:charge", "→ null"),
        ("operator", None, "force-fail by ops: stuck"),
    ]
    durations = {(r.kind, r.step_id): r.duration_ms for r in rows}
    assert durations[("step", "charge")] == 1.5
    assert durations[("woke", "__sleep:0")] == pytest.approx(1000.0)
    assert durations[("signal", "approval")] == pytest.approx(500.0)
    assert durations[("time-out", "late")] == pytest.approx(100.0)
    assert rows[1].duration_ms == pytest.approx(5.0)  # time spent pending
    assert [r.internal for r in rows].count(True) == 1
    assert render.internal_id("__sleep:0") and render.internal_id("rollback:charge")
    assert not render.internal_id("charge")


def test_without_audit_the_timeline_comes_from_the_steps() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    steps = [StepRecord("a", "step", 1, None, t0, t0 + timedelta(milliseconds=4), 4.0, 1, 1),
             StepRecord("b", "step", None, ErrorInfo("KeyError", "'x'", None), t0, t0, 0.0, 2,
                        2)]
    execution = Execution("e2", "wf", "failed", "attempt 2 failed", 2, 2, None, None,
                          ErrorInfo("KeyError", "'x'", None), t0, t0 + timedelta(seconds=1))
    rows = render.timeline(ExecutionDetail(execution, steps, []))
    assert [(r.kind, r.step_id, r.detail, r.attempt) for r in rows] == [
        ("status", None, "pending: created", 1),
        ("step", "a", "→ 1", 1),
        ("step", "b", "KeyError: 'x'", 2),
        ("status", None, "failed: attempt 2 failed", 2),
    ]


def test_plain_options_are_parsed_without_pydantic() -> None:
    """``durablectl.cli.speed`` found typer's internals (the import test shows the effect)."""
    from durablectl.cli import speed

    assert speed.install() is True
    assert speed._convert(int, "12") == 12 and speed._convert(bool, "yes") is True
    with pytest.raises(ValueError):
        speed._convert(int, "twelve")


@pytest.mark.parametrize(("ms", "text"), [
    (None, ""), (0.35, "0.3 ms"), (51.4, "51 ms"), (2500, "2.5 s"), (200_000, "3m 20s"),
    (7_500_000, "2h 5m"), (97_200_000, "1d 3h")])
def test_durations_read_as_people_say_them(ms: float | None, text: str) -> None:
    assert render.duration_text(ms) == text


def test_plain_fields_stay_on_one_line() -> None:
    assert render.tsv_cell("a\tb\nc\\d") == "a\\tb\\nc\\\\d"
    assert render.tsv_cell(None) == ""


# -- real processes ---------------------------------------------------------------------------
def process_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DURABLECTL_", "XDG_")) and k not in ("NO_COLOR", "FORCE_COLOR")}
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        folder = base / "xdg" / name.lower()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[name] = str(folder)
    env["HOME"] = str(base / "home")
    (base / "home").mkdir(exist_ok=True)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, *, input: str | None = None,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, input=input,
                          timeout=timeout)


class Daemon:
    """A daemon on its own database and workflow folder, for the module's process tests."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.db = base / "daemon.db"
        (base / "workflows").mkdir()
        (base / "workflows" / "cli_flows.py").write_text(textwrap.dedent(WORKFLOWS))
        self.config = base / "durablectl.toml"
        self.config.write_text(f'workflows = "workflows"\ndb = "{self.db}"\n'
                               "[daemon]\ngrace_seconds = 2\n")
        self.env = process_env(base)
        self.env["DURABLECTL_CONFIG"] = str(self.config)
        self.pid: int | None = None

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([str(DURABLECTL), *args], self.env, self.base, input=input)

    def start(self) -> None:
        done = self.cli("daemon", "start", "--json")
        assert done.returncode == 0, done.stderr
        self.pid = int(json.loads(done.stdout)["pid"])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("daemon", "stop")
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 0)
                cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
                if b"durablectl" in cmdline:  # still there: never leave it behind
                    os.kill(self.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not DURABLECTL.exists():
        pytest.skip("needs `make install`")
    harness = Daemon(tmp_path_factory.mktemp("cli-daemon"))
    try:
        harness.start()
        yield harness
    finally:
        harness.stop()


def wait_for(predicate: Any, what: str) -> Any:
    end = time.monotonic() + TIMEOUT
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {TIMEOUT:g}s: {what}")
        time.sleep(0.02)


@needs_script
def test_a_shell_script_starts_signals_and_waits(daemon: Daemon) -> None:
    script = textwrap.dedent(f"""\
        set -e
        D={DURABLECTL}
        ID=$($D start cli.gate.v1 --input '{{"n": 1}}')
        until [ "$($D status "$ID" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = waiting ]; do sleep 0.02; done
        $D signal "$ID" go --payload '{{"ok": true}}'
        $D wait "$ID" --timeout 10
        echo "id=$ID"
    """)  # noqa: E501
    done = run(["bash", "-c", script], daemon.env, daemon.base, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # a daemon runs: no notes
    result, id_line = done.stdout.splitlines()
    assert json.loads(result) == {"first": 2, "got": {"ok": True}}
    execution_id = id_line.removeprefix("id=")

    show = daemon.cli("show", execution_id)
    assert show.returncode == 0, show.stderr
    rows = [line.split("\t") for line in show.stdout.split("\n\n")[1].splitlines()[1:]]
    kinds = [(r[1], r[2]) for r in rows if r[1] != "status"]
    assert kinds == [("step", "first"), ("sleep", "nap"), ("woke", "nap"), ("wait", "go"),
                     ("signal", "go"), ("note", "")]
    assert rows[-1][1:3] == ["status", ""] and rows[-1][5] == "running → completed"
    detail = json.loads(daemon.cli("show", execution_id, "--json").stdout)
    assert [s["step_id"] for s in detail["steps"]] == ["first", "nap", "go", "__note:0"]


@needs_script
def test_start_wait_reads_stdin_and_prints_the_id_then_the_result(daemon: Daemon) -> None:
    done = daemon.cli("start", "cli.echo", "--input", "-", "--wait", input='{"x": [1, 2]}')
    assert done.returncode == 0, done.stderr
    execution_id, result = done.stdout.splitlines()
    assert json.loads(result) == {"x": [1, 2]}
    as_json = daemon.cli("start", "cli.echo.v1", "--wait", "--json", "--input", "7")
    data = json.loads(as_json.stdout)
    assert (data["status"], data["result"], data["workflow_id"]) == ("completed", 7,
                                                                      "cli.echo.v1")
    assert data["execution_id"] != execution_id


@needs_script
def test_wait_on_a_failed_execution_is_exit_1(daemon: Daemon) -> None:
    with SqliteStore(daemon.db) as store:  # the CLI has no --max-attempts: one attempt only
        execution_id = DurableClient(store).start_execution("cli.fail.v1", max_attempts=1)
        nudge(socket_for(str(daemon.db), store))
    done = daemon.cli("wait", execution_id, "--timeout", "10")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"error: execution {execution_id} failed: StepFailed: step 'boom' "
                           "failed: ValueError: kaput\n")
    show = daemon.cli("show", execution_id)
    assert "failure of step 'boom' (attempt 1): ValueError: kaput" in show.stdout
    assert 'raise ValueError("kaput")' in show.stdout  # the traceback in full


@needs_script
def test_workflows_and_unknown_ids_against_a_daemon(daemon: Daemon) -> None:
    waiting = daemon.cli("start", "cli.gate.v1", "--input", '{"n": 0}').stdout.strip()
    wait_for(lambda: json.loads(daemon.cli("status", waiting, "--json").stdout)["status"]
             == "waiting", "the gate waits")
    rows = {r["workflow_id"]: r for r in map(
        json.loads, daemon.cli("workflows", "--json").stdout.splitlines())}
    assert rows["cli.echo.v1"]["alias"] == "cli.echo"
    assert rows["cli.gate.v1"]["in_flight"] >= 1
    assert rows["cli.fail.v1"]["alias"] is None
    unknown = daemon.cli("start", "cli.nope")
    assert (unknown.returncode, unknown.stdout) == (3, "")
    assert unknown.stderr == ("error: unknown workflow 'cli.nope' (known: cli.echo.v1, "
                              "cli.fail.v1, cli.gate.v1)\n")
    assert daemon.cli("cancel", waiting).returncode == 0
    cancelled = daemon.cli("wait", waiting)
    assert cancelled.returncode == 1 and cancelled.stderr.startswith("error: ")


@needs_script
def test_parser_errors_and_daemon_less_commands_are_one_line(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    cases = [
        (["status"], 2, "error: Missing argument 'EXECUTION'."),
        (["list", "--limit", "many"], 2, "error: Invalid value for '--limit' / '-n': 'many' is "
                                         "not a valid integer."),
        (["frobnicate"], 2, "error: No such command 'frobnicate'."),
        (["status", "x", "--db", str(tmp_path / "none.db")], 3, "error: unknown execution 'x'"),
        (["daemon", "status", "--db", str(tmp_path / "none.db")], 4, None),
    ]
    for args, code, message in cases:
        done = run([str(DURABLECTL), *args], env, tmp_path)
        assert done.returncode == code, (args, done)
        assert done.stdout == ""
        line = one_line(done.stderr)
        assert line.startswith("error: ")
        if message is not None:
            assert line == message


@needs_script
def test_start_prints_the_id_alone_for_a_shell_variable(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    db = tmp_path / "shell.db"
    script = (f"ID=$({DURABLECTL} start any.v1 --db {db} --input '[1]' 2>/dev/null); "
              f'{DURABLECTL} status "$ID" --db {db} --json')
    done = run(["bash", "-c", script], env, tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["workflow_id"], data["status"], data["input"]) == ("any.v1", "pending", [1])


@needs_script
def test_status_json_imports_neither_asyncio_nor_the_engine(tmp_path: Path) -> None:
    """The hot path of DESIGN-NOTES §7, as ``python -X importtime`` sees it."""
    db = tmp_path / "hot.db"
    execution_id = create(db)
    env = process_env(tmp_path)
    done = run([sys.executable, "-X", "importtime", "-m", "durablectl", "status", execution_id,
                "--json", "--db", str(db)], env, tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["execution_id"] == execution_id
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "durablectl.store.sqlite" in imported  # the measurement saw the command's imports
    for forbidden in ("asyncio", "durablectl.engine", "durablectl.service", "durablectl.runner",
                      "durablectl.context", "watchfiles", "pydantic", "rich", "typer"):
        assert forbidden not in imported, forbidden


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run with stdout on a pseudo-terminal (rich mode) and return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=slave, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    output = b""
    end = time.monotonic() + 30
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=30)
    return output.decode(errors="replace")


def _colours(text: str) -> set[str]:
    """Foreground/background colour parameters in the SGR sequences of ``text``."""
    found = set()
    for params in COLOUR.findall(text):
        for part in params.split(";"):
            if part.isdigit() and (30 <= int(part) <= 49 or 90 <= int(part) <= 107):
                found.add(part)
    return found


@needs_script
def test_a_terminal_gets_colour_unless_no_color_is_set(tmp_path: Path) -> None:
    db = tmp_path / "tty.db"
    execution_id = create(db)
    env = {**process_env(tmp_path), "TERM": "xterm-256color", "COLUMNS": "160"}
    args = [str(DURABLECTL), "list", "--db", str(db)]
    coloured = _on_a_terminal(args, env, tmp_path)
    assert execution_id in coloured and "┃" in coloured  # a rich table
    assert "33" in _colours(coloured)  # pending is yellow
    plain = _on_a_terminal(args, {**env, "NO_COLOR": "1"}, tmp_path)
    assert execution_id in plain
    assert _colours(plain) == set()
    shown = _on_a_terminal([str(DURABLECTL), "show", execution_id, "--db", str(db)],
                           {**env, "NO_COLOR": "1"}, tmp_path)
    assert "timeline (UTC)" in shown and _colours(shown) == set()


@needs_script
def test_python_m_durablectl_and_completion_install(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    db = tmp_path / "m.db"
    execution_id = create(db)
    done = run([sys.executable, "-m", "durablectl", "status", execution_id, "--db", str(db),
                "--json"], env, tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "pending"
    # typer finds the shell from the process tree (shellingham), not from the argument: run the
    # commands under bash (which stays their parent: "; exit $?" keeps it from exec-ing them),
    # so that a test run started from another shell (make's sh) passes too
    shown = run(["bash", "-c", f"'{DURABLECTL}' --show-completion bash; exit $?"], env, tmp_path)
    assert shown.returncode == 0 and "_DURABLECTL_COMPLETE" in shown.stdout
    installed = run(["bash", "-c", f"'{DURABLECTL}' --install-completion bash; exit $?"], env,
                    tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "home" / ".bash_completions" / "durablectl.sh").exists()
    completed = run([str(DURABLECTL)], {**env, "_DURABLECTL_COMPLETE": "complete_bash",
                                        "COMP_WORDS": "durablectl sta", "COMP_CWORD": "1"},
                    tmp_path)
    assert completed.stdout.split() == ["start", "status"]


# -- the fast path of the read commands -------------------------------------------------------
def test_the_fast_path_table_matches_the_typer_declarations() -> None:
    """``durablectl.cli.fast`` mirrors the options declared in ``executions.py``: names, kinds,
    argument order and defaults; and every option of these commands is one it can parse."""
    import typer as typer_module

    root = typer_module.main.get_command(app)
    for name, (arguments, own, defaults) in fast.COMMANDS.items():
        command = root.commands[name]
        declared_arguments = tuple(p.name for p in command.params
                                   if type(p).__name__ == "TyperArgument")
        assert declared_arguments == arguments, name
        declared: dict[str, tuple[str, str]] = {}
        declared_defaults: dict[str, Any] = {}
        for param in command.params:
            if type(param).__name__ != "TyperOption" or param.name == "help":
                continue
            assert not param.secondary_opts and not param.multiple and param.nargs == 1
            assert param.callback is None and not param.hidden, (name, param.name)
            annotation = param.type_descriptor.annotation
            kind = "flag" if param.is_flag else "int" if annotation is int else "text"
            assert kind == "flag" or annotation in (str, int), (name, param.name)
            for opt in param.opts:
                declared[opt] = (str(param.name), kind)
            declared_defaults[str(param.name)] = param.default
            if param.envvar:  # DURABLECTL_DB/CONFIG: the configuration reads them as well
                assert param.name in ("db", "config"), (name, param.name)
        assert declared == {**fast.COMMON, **own}, name
        assert declared_defaults == {**fast.COMMON_DEFAULTS, **defaults}, name


@pytest.mark.parametrize("argv", [
    [], ["start", "wf"], ["status"], ["status", "a", "b"], ["status", "x", "--help"],
    ["status", "x", "-h"], ["list", "--limit=3"], ["list", "--limit", "many"],
    ["list", "--limit"], ["list", "-n", "1", "--limit", "2"], ["status", "--", "x"],
    ["status", "x", "--verbose"], ["wait", "-x"], ["config", "show"],
])
def test_anything_but_a_plain_command_line_goes_to_typer(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def test_plain_command_lines_parse_as_typer_would() -> None:
    assert fast.parse(["status", "e1", "--json", "--db", "x.db"]) == (
        "status", {"execution": "e1", "json": True, "db": "x.db", "config": None,
                   "debug": False})
    assert fast.parse(["list", "-n", "5", "--status", "failed", "--offset", "-", "--json"]) \
        is None  # "-" is not an integer: typer explains
    assert fast.parse(["list", "-n", " 5", "-w", "wf", "--offset", "10"]) == (
        "list", {"status": None, "workflow": "wf", "limit": 5, "offset": 10, "db": None,
                 "config": None, "json": False, "debug": False})
    assert fast.parse(["wait", "-", "-t", "-1"]) == (
        "wait", {"execution": "-", "timeout": "-1", "db": None, "config": None,
                 "json": False, "debug": False})


def test_completion_never_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_DURABLECTL_COMPLETE", "complete_bash")
    assert fast.run_fast(["status", "x"]) is None


@pytest.mark.parametrize("argv", [
    ["status", "{id}"], ["status", "{id}", "--json"], ["status", "nope"], ["show", "{id}"],
    ["show", "{id}", "--json"], ["list"], ["list", "--json", "-s", "cancelled"],
    ["list", "--limit", "1"], ["list", "--status", "bogus"], ["list", "--offset", "-1"],
    ["wait", "{id}"], ["wait", "{id}", "--json"], ["wait", "{other}", "-t", "0"],
    ["wait", "{other}", "-t", "later"], ["workflows"], ["workflows", "--json"],
    ["status", "nope", "--debug"],
])
def test_the_fast_path_prints_what_typer_prints(db: Path, argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    execution_id, other = create(db, data=[1]), create(db)
    cli(db, "cancel", execution_id, "--reason", "test")
    args = [a.format(id=execution_id, other=other) for a in argv] + ["--db", str(db)]
    capsys.readouterr()
    code = fast.run_fast(args)
    fast_out = capsys.readouterr()
    typer_out = cli(db, *args[:-2])
    assert code == typer_out.code
    assert fast_out.out == typer_out.stdout
    if "--debug" in argv:  # the traceback differs in its frames, not in its last line
        assert fast_out.err.splitlines()[-1] == typer_out.stderr.splitlines()[-1]
    else:
        assert fast_out.err == typer_out.stderr
