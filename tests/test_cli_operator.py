"""``durablectl operator retry|fork|skip-step|force-fail|edit-state|retry-rollback|stuck``
(SPEC §6): what each prints, --json, exit codes, one-line errors, the audit entry it leaves.

In process with typer's ``CliRunner`` (executions are moved along through the store, as a
worker would), and once as real processes against a daemon that runs a retried execution to
the end (always stopped at the end). Every process gets its own XDG dirs. No test depends on
timing: waits are on conditions with generous time-outs.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durablectl import DurableOperator, SqliteStore
from durablectl.model import ErrorInfo

from .conftest import isolate_user_dirs
from .test_cli import (
    DURABLECTL,
    EXECUTION_KEYS,
    Daemon,
    cli,
    create,
    error,
    finish,
    ok,
    one_line,
    stored,
    wait_for,
)

NO_DAEMON = "note: no daemon is running for {db}: execution {eid} is pending and runs when " \
            "one does (durablectl daemon start)"



@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_user_dirs(tmp_path, monkeypatch, "operator.db")


def failed(db: Path) -> str:
    """A failed execution whose step ``first`` completed and ``charge`` failed."""
    execution_id = create(db)
    finish(db, execution_id, status="failed", error=ErrorInfo("RuntimeError", "card declined"),
           failed_step="charge")
    return execution_id


def compensation_failed(db: Path) -> str:
    """An execution whose compensation ``rollback:first`` failed."""
    execution_id = create(db)
    now = time.time()
    with SqliteStore(db) as store:
        assert store.claim_execution(execution_id, worker_id="w", workflow_ids=["cli.echo.v1"],
                                     now=now, real_now=now, lease_until=now + 30)
        store.record_step(execution_id=execution_id, worker_id="w", step_id="first",
                          kind="step", result_json='"booked"', error=None, attempt=1,
                          started_at=now, completed_at=now, now=now)
        error = ErrorInfo("RuntimeError", "hotel offline")
        store.record_step(execution_id=execution_id, worker_id="w", step_id="rollback:first",
                          kind="rollback", result_json=None, error=error, attempt=1,
                          started_at=now, completed_at=now, now=now)
        store.finish(execution_id=execution_id, worker_id="w", status="compensation_failed",
                     result_json=None, error=error, reason="compensation failed", now=now)
    return execution_id


def actions(db: Path, execution_id: str) -> list[dict[str, Any]]:
    with SqliteStore(db) as store:
        return [a.data for a in store.list_audit_entries(execution_id)
                if a.kind == "operator_action"]


def steps(db: Path, execution_id: str) -> dict[str, Any]:
    with SqliteStore(db) as store:
        return {s.step_id: s for s in store.list_step_results(execution_id)}


# -- each action ------------------------------------------------------------------------------
def test_retry_prints_the_id_records_who_and_why_and_notes_no_daemon(db: Path) -> None:
    execution_id = failed(db)
    out = ok(cli(db, "operator", "retry", execution_id, "--reason", "card fixed"))
    assert out.stdout == f"{execution_id}\n"
    assert one_line(out.stderr) == NO_DAEMON.format(db=db.resolve(), eid=execution_id)
    found = stored(db, execution_id)
    assert (found.status, found.attempt, found.error) == ("pending", 2, None)
    assert actions(db, execution_id) == [{
        "action": "retry", "actor": DurableOperator.default_actor(), "reason": "card fixed",
        "step_id": None}]


def test_json_prints_the_execution_object_after_the_action(db: Path) -> None:
    execution_id = failed(db)
    data = ok(cli(db, "operator", "retry", execution_id, "--json")).json()
    assert set(data) >= EXECUTION_KEYS
    assert (data["execution_id"], data["status"], data["attempt"]) == (
        execution_id, "pending", 2)


def test_a_status_the_action_does_not_accept_is_exit_2(db: Path) -> None:
    done = create(db)
    finish(db, done, result=1)
    assert error(cli(db, "operator", "retry", done), 2) == (
        f"error: cannot retry execution {done}: it is completed (accepted: failed)")
    assert error(cli(db, "operator", "retry-rollback", done), 2) == (
        f"error: cannot retry-rollback execution {done}: it is completed "
        "(accepted: compensation_failed)")
    assert error(cli(db, "operator", "force-fail", done, "--json"), 2).startswith(
        f"error: cannot force-fail execution {done}: it is completed (accepted: pending, ")
    assert actions(db, done) == []


@pytest.mark.parametrize("args", [
    ["retry", "nope"], ["retry-rollback", "nope"], ["force-fail", "nope"],
    ["fork", "nope", "--step", "a"], ["skip-step", "nope", "--step", "a"],
    ["edit-state", "nope", "--step", "a", "--value", "1"]])
def test_an_unknown_execution_is_exit_3_and_creates_no_database(db: Path,
                                                                args: list[str]) -> None:
    assert error(cli(db, "operator", *args), 3) == "error: unknown execution 'nope'"
    assert not db.exists()
    create(db)
    assert error(cli(db, "operator", *args), 3) == "error: unknown execution 'nope'"


def test_an_unknown_step_is_exit_2_naming_the_stored_steps(db: Path) -> None:
    execution_id = failed(db)
    for command in ("skip-step", "fork"):
        assert error(cli(db, "operator", command, execution_id, "--step", "nope"), 2) == (
            f"error: execution {execution_id} has no step 'nope' (its steps: first, charge)")
    assert error(cli(db, "operator", "edit-state", execution_id, "--step", "nope", "--value",
                     "1"), 2).startswith(f"error: execution {execution_id} has no stored step")


def test_skip_step_reads_the_value_inline_from_a_file_or_stdin(db: Path, tmp_path: Path) -> None:
    execution_id = failed(db)
    ok(cli(db, "operator", "skip-step", execution_id, "--step", "charge", "--value",
           '{"manual": 1}', "--reason", "charged by phone"))
    assert steps(db, execution_id)["charge"].result == {"manual": 1}
    assert steps(db, execution_id)["charge"].error is None
    assert stored(db, execution_id).status == "pending"
    value_file = tmp_path / "value.json"
    value_file.write_text('["from", "file"]')
    ok(cli(db, "operator", "skip-step", execution_id, "--step", "first", "--value",
           f"@{value_file}"))
    assert steps(db, execution_id)["first"].result == ["from", "file"]
    ok(cli(db, "operator", "skip-step", execution_id, "--step", "first", "--value", "-",
           input='"stdin"'))
    assert steps(db, execution_id)["first"].result == "stdin"
    ok(cli(db, "operator", "skip-step", execution_id, "--step", "first"))  # default: null
    assert steps(db, execution_id)["first"].result is None
    assert [a["value"] for a in actions(db, execution_id)] == [
        {"manual": 1}, ["from", "file"], "stdin", None]


def test_a_bad_value_is_exit_2_and_changes_nothing(db: Path) -> None:
    execution_id = failed(db)
    line = error(cli(db, "operator", "edit-state", execution_id, "--step", "first", "--value",
                     "{nope"), 2)
    assert line.startswith("error: --value is not valid JSON")
    # parser errors (one line once durablectl.cli.app.run prints them; typer's box here)
    missing = cli(db, "operator", "edit-state", execution_id, "--step", "first")
    assert missing.code == 2 and "Missing option '--value'" in missing.stderr
    missing = cli(db, "operator", "fork", execution_id)
    assert missing.code == 2 and "Missing option '--step'" in missing.stderr
    assert steps(db, execution_id)["first"].result == {"v": 1}
    assert actions(db, execution_id) == []


def test_edit_state_changes_the_result_and_not_the_status(db: Path) -> None:
    execution_id = failed(db)
    out = ok(cli(db, "operator", "edit-state", execution_id, "--step", "first", "--value",
                 '{"v": 2}', "-r", "wrong amount"))
    assert (out.stdout, out.stderr) == (f"{execution_id}\n", "")  # nothing runs: no note
    assert steps(db, execution_id)["first"].result == {"v": 2}
    assert stored(db, execution_id).status == "failed"
    [entry] = actions(db, execution_id)
    assert (entry["action"], entry["step_id"], entry["value"], entry["previous"],
            entry["reason"]) == ("edit-state", "first", {"v": 2}, {"v": 1}, "wrong amount")


def test_force_fail_fails_an_active_execution_with_the_reason(db: Path) -> None:
    execution_id = create(db)
    out = ok(cli(db, "operator", "force-fail", execution_id, "--reason", "customer left"))
    assert (out.stdout, out.stderr) == (f"{execution_id}\n", "")
    found = stored(db, execution_id)
    assert found.status == "failed" and found.error is not None
    assert (found.error.type, found.error.message) == ("ForceFailed", "customer left")
    assert error(cli(db, "operator", "force-fail", execution_id), 2).startswith(
        f"error: cannot force-fail execution {execution_id}: it is failed")


def test_fork_prints_the_new_id_and_leaves_the_original(db: Path) -> None:
    execution_id = failed(db)
    new_id = one_line(ok(cli(db, "operator", "fork", execution_id, "--step", "charge")).stdout)
    assert new_id != execution_id
    assert list(steps(db, new_id)) == ["first"]
    assert stored(db, new_id).forked_from == {"execution_id": execution_id,
                                              "step_id": "charge"}
    assert stored(db, execution_id).status == "failed"
    data = ok(cli(db, "operator", "fork", execution_id, "--step", "first", "--json")).json()
    assert data["forked_from"] == {"execution_id": execution_id, "step_id": "first"}
    assert data["status"] == "pending" and data["execution_id"] not in (execution_id, new_id)
    assert steps(db, data["execution_id"]) == {}
    assert [a["fork"] for a in actions(db, execution_id)] == [new_id, data["execution_id"]]


def test_retry_rollback_removes_the_failed_compensation_and_resumes(db: Path) -> None:
    execution_id = compensation_failed(db)
    out = ok(cli(db, "operator", "retry-rollback", execution_id, "--json"))
    data = out.json()
    assert (data["status"], data["attempt"], data["error"]) == ("pending", 1, None)
    assert list(steps(db, execution_id)) == ["first"]
    assert actions(db, execution_id)[0]["step_id"] == "rollback:first"


def test_stuck_lists_like_list(db: Path) -> None:
    assert ok(cli(db, "operator", "stuck")).stdout.startswith("execution_id\tworkflow_id\t")
    assert not db.exists()
    stuck_one, stuck_two = failed(db), compensation_failed(db)
    fine = create(db)
    plain = ok(cli(db, "operator", "stuck")).stdout.splitlines()
    assert plain[0].split("\t") == ["execution_id", "workflow_id", "status", "attempt",
                                    "created_at", "updated_at", "status_reason"]
    assert {line.split("\t")[0] for line in plain[1:]} == {stuck_one, stuck_two}
    lines = ok(cli(db, "operator", "stuck", "--json")).lines()
    assert {row["execution_id"] for row in lines} == {stuck_one, stuck_two}
    assert all(set(row) >= EXECUTION_KEYS for row in lines)
    assert len(ok(cli(db, "operator", "stuck", "--json", "--limit", "1")).lines()) == 1
    assert fine not in ok(cli(db, "operator", "stuck")).stdout
    assert error(cli(db, "operator", "stuck", "--limit", "-1"), 2) == (
        "error: --limit must be zero or more")


# -- against a daemon -------------------------------------------------------------------------
OPERATOR_WORKFLOWS = '''
from pathlib import Path

from durablectl import workflow


def _charge(flag):
    if not Path(flag).exists():
        raise RuntimeError("card service down")
    return "charged"


@workflow("cliop.pay.v1", max_attempts=1)
async def pay(ctx, data):
    await ctx.step("reserve", lambda: "reserved")
    return await ctx.step("charge", lambda: _charge(data["flag"]))
'''


class OperatorDaemon(Daemon):
    def __init__(self, base: Path) -> None:
        super().__init__(base)
        (base / "workflows" / "cli_flows.py").write_text(textwrap.dedent(OPERATOR_WORKFLOWS))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorDaemon]:
    if not DURABLECTL.exists():
        pytest.skip("needs `make install`")
    harness = OperatorDaemon(tmp_path_factory.mktemp("cli-operator-daemon"))
    try:
        harness.start()
        yield harness
    finally:
        harness.stop()


def test_a_retried_execution_runs_at_once_on_the_daemon(daemon: OperatorDaemon) -> None:
    flag = daemon.base / "card-service-up"
    started = daemon.cli("start", "cliop.pay.v1", "--input", json.dumps({"flag": str(flag)}),
                         "--wait")
    assert started.returncode == 1, started
    execution_id = started.stdout.strip()
    stuck = daemon.cli("operator", "stuck", "--json")
    assert execution_id in {json.loads(line)["execution_id"]
                            for line in stuck.stdout.splitlines()}
    flag.touch()  # the service is back
    retried = daemon.cli("operator", "retry", execution_id, "--reason", "service back")
    assert (retried.returncode, retried.stdout, retried.stderr) == (0, f"{execution_id}\n", "")
    done = daemon.cli("wait", execution_id, "--timeout", "10")
    assert (done.returncode, done.stdout) == (0, '"charged"\n'), done
    found = wait_for(lambda: json.loads(daemon.cli("show", execution_id, "--json").stdout),
                     "the execution's detail")
    assert found["execution"]["attempt"] == 2
    kinds = [a["data"].get("action") for a in found["audit"] if a["kind"] == "operator_action"]
    assert kinds == ["retry"]
    timeline = daemon.cli("show", execution_id).stdout
    assert "retry by" in timeline and "service back" in timeline
    missing = daemon.cli("operator", "edit-state", execution_id, "--step", "charge")
    assert (missing.returncode, missing.stdout, missing.stderr) == (
        2, "", "error: Missing option '--value'.\n")
