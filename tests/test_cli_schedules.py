"""``durablectl schedule add|ensure|list|show|pause|resume|update|remove|preview`` (SPEC §6):
output modes, the schedule JSON shape, exit codes, one-line errors, durations and times.

In process with typer's ``CliRunner`` (ticks are fired through the store, as a worker fires
them), and once as real processes against a daemon that fires an ``--every 1s`` schedule
(always stopped at the end). Every process gets its own XDG dirs. No test depends on timing:
waits are on conditions with generous time-outs, and relative times are checked loosely.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from durablectl import SqliteStore, next_runs
from durablectl.cli import core
from durablectl.cli.schedule_actions import every_text, relative_text, span_text
from durablectl.model import Schedule
from durablectl.schedules import SchedulePlanner

from .conftest import isolate_user_dirs
from .test_cli import DURABLECTL, cli, error, ok, one_line, process_env, run

SCHEDULE_KEYS = {"id", "workflow_id", "kind", "cron", "interval_seconds", "timezone", "input",
                 "status", "catch_up", "overlap", "next_run", "last_run", "last_execution_id",
                 "last_execution_status", "paused_reason"}
RUN_KEYS = {"schedule_id", "due_at", "outcome", "execution_id", "recorded_at", "missed_count",
            "execution_status"}
NO_DAEMON = re.compile(r"note: no daemon is running for .*: schedule (\S+) fires when one runs "
                       r"\(durablectl daemon start\)")



@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_user_dirs(tmp_path, monkeypatch, "sched.db")


def schedule_of(db: Path, schedule_id: str) -> Schedule:
    with SqliteStore(db) as store:
        found = store.get_schedule(schedule_id)
    assert found is not None
    return found


def fire(db: Path, at: datetime) -> list[str]:
    """Fire the ticks due at ``at`` through the store, as a worker does."""
    now = at.timestamp()

    def new_execution(schedule: Schedule, tick: float) -> dict[str, Any]:
        return {"execution_id": uuid.uuid4().hex[:16], "max_attempts": 3, "retry_backoff": 2.0,
                "input_json": json.dumps(schedule.input), "deadline": None}

    with SqliteStore(db) as store:
        planner = SchedulePlanner(now=now, misfire_grace_seconds=60, max_catch_up=100)
        return store.fire_schedules(now=now, limit=100, plan=planner,
                                    new_execution=new_execution)


def record_workflows(db: Path) -> None:
    with SqliteStore(db) as store:
        store.record_workflows(worker_id="w1", workflows=[("rep.v1", "rep"), ("other.v1", None)],
                               now=1.0)


def near(value: str, expected: datetime, slack: float = 30.0) -> bool:
    when = datetime.fromisoformat(value)
    return abs((when - expected).total_seconds()) <= slack


# -- add --------------------------------------------------------------------------------------
def test_add_in_prints_the_id_alone_and_a_note(db: Path) -> None:
    out = ok(cli(db, "schedule", "add", "rep.v1", "--in", "10m", "--input", '{"a": [1]}'))
    schedule_id = one_line(out.stdout)
    assert re.fullmatch(r"once-[0-9a-f]{12}", schedule_id)
    match = NO_DAEMON.fullmatch(one_line(out.stderr))
    assert match and match.group(1) == schedule_id
    schedule = schedule_of(db, schedule_id)
    assert (schedule.kind, schedule.workflow_id, schedule.input, schedule.status) == (
        "once", "rep.v1", {"a": [1]}, "active")
    assert schedule.next_run is not None
    assert near(schedule.next_run.isoformat(), datetime.now(UTC) + timedelta(minutes=10))


def test_add_at_json_is_the_schedule_object_and_an_id_is_not_reused(db: Path) -> None:
    out = ok(cli(db, "schedule", "add", "rep.v1", "--at", "2030-01-31T09:00:00+01:00",
                 "--id", "report", "--json"))
    data = out.json()
    assert set(data) >= SCHEDULE_KEYS
    assert (data["id"], data["kind"], data["next_run"], data["status"], data["input"]) == (
        "report", "once", "2030-01-31T08:00:00Z", "active", None)
    utc = ok(cli(db, "schedule", "add", "rep.v1", "--at", "2030-02-01T00:00:00Z", "--json"))
    assert utc.json()["next_run"] == "2030-02-01T00:00:00Z"
    again = cli(db, "schedule", "add", "rep.v1", "--in", "1h", "--id", "report")
    assert error(again, 2) == ("error: schedule 'report' already exists (durablectl schedule "
                               "remove report first)")
    assert schedule_of(db, "report").next_run == datetime(2030, 1, 31, 8, tzinfo=UTC)


@pytest.mark.parametrize(("args", "message"), [
    (["--at", "2030-01-31T09:00:00"],
     "--at '2030-01-31T09:00:00' has no timezone: add Z for UTC or an offset such as +01:00"),
    (["--at", "2030-01-31"],
     "--at '2030-01-31' has no timezone: add Z for UTC or an offset such as +01:00"),
    (["--at", "tomorrow"],
     "bad time 'tomorrow' for --at: use ISO 8601 with a timezone, such as 2030-01-31T09:00:00Z "
     "or 2030-01-31T09:00:00+01:00"),
    ([], "give one of --at and --in"),
    (["--at", "2030-01-31T09:00:00Z", "--in", "1h"], "give one of --at and --in"),
    (["--in", "soon"], "bad duration 'soon': use seconds or 30s, 10m, 2h, 1d"),
    (["--in", "10m", "--input", "{nope"],
     "--input is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
     "column 2"),
])
def test_add_refuses_bad_times_and_durations_before_storing(db: Path, args: list[str],
                                                            message: str) -> None:
    out = cli(db, "schedule", "add", "rep.v1", *args)
    assert error(out, 2) == f"error: {message}"
    assert not db.exists()


def test_add_at_a_time_that_has_passed_says_it_runs_at_once(db: Path) -> None:
    out = ok(cli(db, "schedule", "add", "rep.v1", "--at", "2020-01-01T00:00:00Z"))
    schedule_id = one_line(out.stdout)
    assert out.stderr.splitlines()[-1] == (
        f"note: --at 2020-01-01T00:00:00Z has passed: schedule {schedule_id} runs as soon as a "
        "worker sees it")
    assert fire(db, datetime.now(UTC))  # however late, it runs once
    assert schedule_of(db, schedule_id).status == "done"


# -- ensure -----------------------------------------------------------------------------------
def test_ensure_cron_prints_the_schedule_and_is_idempotent(db: Path) -> None:
    args = ["schedule", "ensure", "rep.v1", "--id", "nightly", "--cron", "0 3 * * *",
            "--timezone", "Europe/Paris", "--input", '{"kind": "nightly"}']
    first = ok(cli(db, *args, "--json")).json()
    assert set(first) >= SCHEDULE_KEYS
    assert (first["id"], first["kind"], first["cron"], first["timezone"], first["input"],
            first["catch_up"], first["overlap"], first["interval_seconds"]) == (
        "nightly", "cron", "0 3 * * *", "Europe/Paris", {"kind": "nightly"}, "one", "allow", None)
    paris = datetime.fromisoformat(first["next_run"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (paris.hour, paris.minute) == (3, 0)
    plain = ok(cli(db, *args))
    fields = dict(line.split("\t", 1) for line in plain.stdout.splitlines())
    assert fields["schedule"] == "nightly" and fields["cron"] == "0 3 * * *"
    assert fields["timezone"] == "Europe/Paris" and fields["status"] == "active"
    assert fields["input"] == '{"kind":"nightly"}'
    next_run, relative = fields["next run"].split(" ", 1)
    assert next_run == first["next_run"].replace(".000000", "")
    assert re.fullmatch(r"\(in (1d|\d+h \d+m|\d+h|\d+m \d+s|\d+m|\d+s)\)", relative), relative
    assert NO_DAEMON.fullmatch(one_line(plain.stderr))
    assert schedule_of(db, "nightly").next_run == datetime.fromisoformat(first["next_run"])


def test_ensure_every_with_policies(db: Path) -> None:
    data = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "sync", "--every", "15m",
                  "--catch-up", "none", "--overlap", "skip", "--json")).json()
    assert (data["kind"], data["interval_seconds"], data["cron"], data["catch_up"],
            data["overlap"]) == ("interval", 900.0, None, "none", "skip")
    assert near(data["next_run"], datetime.now(UTC) + timedelta(minutes=15))


def test_ensure_takes_the_configured_default_policies(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "durablectl.toml"
    config.write_text('[schedules]\ncatch_up = "all"\noverlap = "queue"\n')
    data = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "c", "--every", "1h", "--json",
                  "--config", str(config))).json()
    assert (data["catch_up"], data["overlap"]) == ("all", "queue")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), ("45", 45.0),
    ("1.5h", 5400.0), (" 2H ", 7200.0)])
def test_durations_read_as_people_say_them(db: Path, text: str, seconds: float) -> None:
    data = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "d", "--every", text,
                  "--json")).json()
    assert data["interval_seconds"] == seconds
    assert every_text(seconds) == {30.0: "30s", 600.0: "10m", 7200.0: "2h", 86400.0: "1d",
                                   45.0: "45s", 5400.0: "90m"}[seconds]


@pytest.mark.parametrize(("text", "message"), [
    ("10x", "bad duration '10x': use seconds or 30s, 10m, 2h, 1d"),
    ("m", "bad duration 'm': use seconds or 30s, 10m, 2h, 1d"),
    ("ten", "bad duration 'ten': use seconds or 30s, 10m, 2h, 1d"),
    ("", "bad duration '': use seconds or 30s, 10m, 2h, 1d"),
    ("-5m", "bad duration '-5m': it must be zero or more"),
    ("0s", "bad duration '0s' for --every: it must be more than zero"),
])
def test_bad_durations_are_exit_2(db: Path, text: str, message: str) -> None:
    for command in (["ensure", "rep.v1", "--id", "d"], ["preview"]):
        out = cli(db, "schedule", *command, "--every", text)
        assert error(out, 2) == f"error: {message}"
    assert not db.exists()


@pytest.mark.parametrize("expression", ["61 * * * *", "* * *", "0 3 * * mon-frii", "@hourlyy"])
def test_a_bad_cron_is_exit_2_naming_the_expression(db: Path, expression: str) -> None:
    for command in (["ensure", "rep.v1", "--id", "c"], ["preview"]):
        line = error(cli(db, "schedule", *command, "--cron", expression), 2)
        assert line.startswith("error: invalid cron expression ")
        assert repr(expression) in line
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "c", "--every", "1h"))
    line = error(cli(db, "schedule", "update", "c", "--cron", expression), 2)
    assert repr(expression) in line
    assert schedule_of(db, "c").kind == "interval"  # nothing stored
    with SqliteStore(db) as store:
        assert [s.id for s in store.list_schedules()] == ["c"]


def test_an_unknown_timezone_is_exit_2(db: Path) -> None:
    message = ("error: unknown timezone 'Mars/Olympus' (use an IANA name such as "
               "'Europe/Paris' or 'UTC')")
    for command in (["ensure", "rep.v1", "--id", "c"], ["preview"]):
        out = cli(db, "schedule", *command, "--cron", "0 3 * * *", "--timezone", "Mars/Olympus")
        assert error(out, 2) == message
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "c", "--cron", "0 3 * * *",
           "--timezone", "UTC"))
    assert error(cli(db, "schedule", "update", "c", "--timezone", "Mars/Olympus"), 2) == message
    assert schedule_of(db, "c").timezone == "UTC"


@pytest.mark.parametrize(("args", "message"), [
    (["--id", "x"], "give one of --cron and --every"),
    (["--id", "x", "--cron", "0 3 * * *", "--every", "1h"], "give one of --cron and --every"),
    (["--id", "x", "--every", "1h", "--timezone", "UTC"],
     "--timezone applies to --cron schedules only (an interval is the same in every timezone)"),
    (["--id", "x", "--every", "1h", "--catch-up", "some"],
     "unknown --catch-up 'some' (use one, all, none)"),
    (["--id", "x", "--every", "1h", "--overlap", "wait"],
     "unknown --overlap 'wait' (use allow, skip, queue)"),
    (["--every", "1h"], "Missing option '--id'."),
])
def test_ensure_usage_errors_are_exit_2(db: Path, args: list[str], message: str) -> None:
    out = cli(db, "schedule", "ensure", "rep.v1", *args)
    if message.startswith("Missing"):  # typer's own parser error (one line through app.run)
        assert out.code == 2 and message in out.stderr
        return
    assert error(out, 2) == f"error: {message}"


def test_an_id_of_another_workflow_is_exit_2(db: Path) -> None:
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "mine", "--every", "1h"))
    out = cli(db, "schedule", "ensure", "other.v1", "--id", "mine", "--every", "1h")
    assert error(out, 2) == "error: schedule 'mine' belongs to workflow 'rep.v1', not 'other.v1'"


def test_an_unknown_workflow_is_exit_3_once_workflows_are_recorded(db: Path) -> None:
    record_workflows(db)
    known = "(known: other.v1, rep.v1)"
    for command in (["add", "rep.v2", "--in", "1m"],
                    ["ensure", "rep.v2", "--id", "x", "--every", "1m"]):
        assert error(cli(db, "schedule", *command), 3) == (
            f"error: unknown workflow 'rep.v2' {known}")
    by_alias = ok(cli(db, "schedule", "ensure", "rep", "--id", "x", "--every", "1m", "--json"))
    assert by_alias.json()["workflow_id"] == "rep.v1"
    with SqliteStore(db) as store:
        assert [s.id for s in store.list_schedules()] == ["x"]


# -- list, show -------------------------------------------------------------------------------
def test_list_on_a_missing_database_prints_the_header_only(db: Path) -> None:
    out = ok(cli(db, "schedule", "list"))
    assert out.stdout.splitlines() == [
        "id\tworkflow_id\tkind\tcron\tevery\ttimezone\tstatus\tpaused_reason\tnext_run\t"
        "next_run_in\tlast_run\tlast_execution_id\tlast_execution_status"]
    assert ok(cli(db, "schedule", "list", "--json")).stdout == ""
    assert not db.exists()


def test_list_plain_and_json(db: Path) -> None:
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "b-cron", "--cron", "*/5 * * * *",
           "--timezone", "Asia/Tokyo"))
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "a-every", "--every", "2h"))
    ok(cli(db, "schedule", "add", "rep.v1", "--in", "1d", "--id", "c-once"))
    ok(cli(db, "schedule", "pause", "b-cron"))
    out = ok(cli(db, "schedule", "list"))
    header, *lines = out.stdout.splitlines()
    rows = [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]
    assert [r["id"] for r in rows] == ["a-every", "b-cron", "c-once"]
    a, b, c = rows
    assert (a["kind"], a["every"], a["cron"], a["timezone"], a["status"]) == (
        "interval", "2h", "", "", "active")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["next_run"])
    assert a["next_run_in"] in ("in 2h", "in 1h 59m")
    assert (b["kind"], b["cron"], b["timezone"], b["status"], b["paused_reason"],
            b["next_run"], b["next_run_in"]) == (
        "cron", "*/5 * * * *", "Asia/Tokyo", "paused", "operator", "", "")
    assert (c["kind"], c["every"], c["status"]) == ("once", "", "active")
    assert c["next_run_in"] in ("in 1d", "in 23h 59m")
    objects = ok(cli(db, "schedule", "list", "--json")).lines()
    assert [o["id"] for o in objects] == ["a-every", "b-cron", "c-once"]
    assert all(set(o) >= SCHEDULE_KEYS for o in objects)
    assert objects[1]["paused_reason"] == "operator"


def test_show_has_the_schedule_and_its_runs(db: Path) -> None:
    data = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "s", "--every", "1m",
                  "--overlap", "skip", "--input", "[7]", "--json")).json()
    first_tick = datetime.fromisoformat(data["next_run"])
    assert len(fire(db, first_tick)) == 1
    assert fire(db, first_tick + timedelta(minutes=1)) == []  # the first still runs: skipped
    shown = ok(cli(db, "schedule", "show", "s", "--json")).json()
    assert set(shown) == {"schedule", "runs"}
    assert shown["schedule"]["id"] == "s" and set(shown["schedule"]) >= SCHEDULE_KEYS
    runs = shown["runs"]
    assert all(set(r) == RUN_KEYS for r in runs)
    assert [(r["outcome"], r["execution_status"]) for r in runs] == [
        ("skipped", None), ("started", "pending")]  # newest first
    started = runs[1]
    assert datetime.fromisoformat(started["due_at"]) == first_tick
    assert shown["schedule"]["last_execution_id"] == started["execution_id"]
    assert shown["schedule"]["last_execution_status"] == "pending"

    plain = ok(cli(db, "schedule", "show", "s")).stdout
    fields, history = plain.split("\n\n")
    values = dict(line.split("\t", 1) for line in fields.splitlines())
    assert values["last execution"] == f"{started['execution_id']} pending"
    assert values["every"] == "1m" and values["overlap"] == "skip" and values["input"] == "[7]"
    header, *rows = [line.split("\t") for line in history.splitlines()]
    assert header == ["due_at", "outcome", "execution_id", "execution_status", "missed_count",
                      "recorded_at"]
    assert [r[1:4] for r in rows] == [["skipped", "", ""],
                                      ["started", started["execution_id"], "pending"]]
    assert rows[1][0] == first_tick.strftime("%Y-%m-%dT%H:%M:%SZ")
    limited = ok(cli(db, "schedule", "show", "s", "--json", "--limit", "1")).json()
    assert [r["outcome"] for r in limited["runs"]] == ["skipped"]


def test_show_counts_missed_ticks(db: Path) -> None:
    data = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "m", "--every", "1m",
                  "--catch-up", "none", "--json")).json()
    first_tick = datetime.fromisoformat(data["next_run"])
    # ten ticks more than a minute late are missed; the one 30 s late still runs
    assert len(fire(db, first_tick + timedelta(minutes=10, seconds=30))) == 1
    runs = ok(cli(db, "schedule", "show", "m", "--json")).json()["runs"]
    assert [(r["outcome"], r["missed_count"], r["due_at"]) for r in runs] == [
        ("started", 0, (first_tick + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")),
        ("missed", 10, (first_tick + timedelta(minutes=9)).isoformat().replace("+00:00", "Z"))]
    plain = ok(cli(db, "schedule", "show", "m")).stdout.split("\n\n")[1].splitlines()
    assert [line.split("\t")[1:5:3] for line in plain[1:]] == [["started", "0"],
                                                               ["missed", "10"]]


# -- pause, resume, update, remove ------------------------------------------------------------
def test_pause_and_resume(db: Path) -> None:
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "p", "--every", "10m"))
    paused = ok(cli(db, "schedule", "pause", "p"))
    assert (paused.stdout, paused.stderr) == ("paused p\n", "")
    data = ok(cli(db, "schedule", "pause", "p", "--json")).json()
    assert (data["status"], data["paused_reason"]) == ("paused", "operator")
    resumed = ok(cli(db, "schedule", "resume", "p"))
    assert re.fullmatch(r"resumed p: next run \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in (10m|9m \d+s)\)",
                        one_line(resumed.stdout)), resumed.stdout
    assert NO_DAEMON.fullmatch(one_line(resumed.stderr))
    data = ok(cli(db, "schedule", "resume", "p", "--json")).json()
    assert (data["status"], data["paused_reason"]) == ("active", None)
    # ensure never changes the status an operator set
    ok(cli(db, "schedule", "pause", "p"))
    again = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "p", "--every", "10m", "--json"))
    assert again.json()["status"] == "paused"
    assert again.stderr == ""  # a paused schedule does not fire: no note


def test_a_done_one_time_schedule_cannot_be_paused_or_resumed(db: Path) -> None:
    schedule_id = one_line(ok(cli(db, "schedule", "add", "rep.v1", "--in", "0s")).stdout)
    assert len(fire(db, datetime.now(UTC) + timedelta(seconds=1))) == 1
    for action in ("pause", "resume"):
        assert error(cli(db, "schedule", action, schedule_id), 2) == (
            f"error: cannot {action} schedule {schedule_id!r}: it is done")


def test_update_changes_only_what_it_is_given(db: Path) -> None:
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "u", "--cron", "0 3 * * *",
           "--timezone", "Europe/Paris", "--input", '{"v": 1}', "--overlap", "skip"))
    data = ok(cli(db, "schedule", "update", "u", "--catch-up", "all", "--json")).json()
    assert (data["cron"], data["timezone"], data["input"], data["overlap"], data["catch_up"]) == (
        "0 3 * * *", "Europe/Paris", {"v": 1}, "skip", "all")
    data = ok(cli(db, "schedule", "update", "u", "--input", "null", "--json")).json()
    assert data["input"] is None and data["catch_up"] == "all"
    data = ok(cli(db, "schedule", "update", "u", "--timezone", "America/New_York",
                  "--json")).json()
    assert (data["timezone"], data["cron"]) == ("America/New_York", "0 3 * * *")
    data = ok(cli(db, "schedule", "update", "u", "--every", "30m", "--json")).json()
    assert (data["kind"], data["interval_seconds"], data["cron"], data["overlap"]) == (
        "interval", 1800.0, None, "skip")
    plain = ok(cli(db, "schedule", "update", "u", "--cron", "*/10 * * * *"))
    fields = dict(line.split("\t", 1) for line in plain.stdout.splitlines())
    assert (fields["kind"], fields["cron"]) == ("cron", "*/10 * * * *")
    assert NO_DAEMON.fullmatch(one_line(plain.stderr))


@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to update: give --cron, --every, --input, --timezone, --catch-up or "
         "--overlap"),
    (["--cron", "0 3 * * *", "--every", "1h"], "give one of --cron and --every"),
    (["--every", "1h", "--timezone", "UTC"],
     "--timezone applies to --cron schedules only (an interval is the same in every timezone)"),
    (["--timezone", "UTC"],
     "--timezone applies to --cron schedules only: schedule 'i' runs every 1h"),
    (["--overlap", "never"], "unknown --overlap 'never' (use allow, skip, queue)"),
    (["--every", "0"], "bad duration '0' for --every: it must be more than zero"),
])
def test_update_usage_errors_are_exit_2(db: Path, args: list[str], message: str) -> None:
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "i", "--every", "1h"))
    assert error(cli(db, "schedule", "update", "i", *args), 2) == f"error: {message}"


def test_a_one_time_schedule_cannot_be_updated(db: Path) -> None:
    ok(cli(db, "schedule", "add", "rep.v1", "--in", "1h", "--id", "o"))
    assert error(cli(db, "schedule", "update", "o", "--every", "1h"), 2) == (
        "error: schedule 'o' is a one-time schedule; remove it and add another")


def test_remove(db: Path) -> None:
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "r1", "--every", "1h"))
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "r2", "--every", "1h"))
    assert ok(cli(db, "schedule", "remove", "r1")).stdout == "removed r1\n"
    assert ok(cli(db, "schedule", "remove", "r2", "--json")).json() == {"id": "r2",
                                                                        "removed": True}
    assert ok(cli(db, "schedule", "list", "--json")).stdout == ""


@pytest.mark.parametrize("command", [
    ["show", "nope"], ["pause", "nope"], ["resume", "nope"], ["remove", "nope"],
    ["update", "nope", "--every", "1h"]])
def test_an_unknown_schedule_is_exit_3(db: Path, command: list[str]) -> None:
    assert error(cli(db, "schedule", *command), 3) == "error: unknown schedule 'nope'"
    assert not db.exists()  # a missing database is not created
    ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "other", "--every", "1h"))
    assert error(cli(db, "schedule", *command), 3) == "error: unknown schedule 'nope'"


# -- preview ----------------------------------------------------------------------------------
def test_preview_json_and_plain_match_next_runs(db: Path) -> None:
    after = datetime(2030, 3, 30, 22, 0, tzinfo=UTC)  # across the spring-forward in Paris
    args = ["schedule", "preview", "--cron", "30 2 * * *", "--timezone", "Europe/Paris",
            "--after", "2030-03-30T22:00:00Z", "--count", "3"]
    expected = next_runs(cron="30 2 * * *", timezone="Europe/Paris", after=after, count=3)
    lines = ok(cli(db, *args, "--json")).lines()
    assert [datetime.fromisoformat(line["at"]) for line in lines] == expected
    assert [line["local"] for line in lines] == [
        "2030-03-31T03:00:00+02:00", "2030-04-01T02:30:00+02:00", "2030-04-02T02:30:00+02:00"]
    header, *rows = ok(cli(db, *args)).stdout.splitlines()
    assert header == "at\tlocal\tin"
    assert [r.split("\t")[:2] for r in rows] == [[line["at"], line["local"]] for line in lines]
    assert all(r.split("\t")[2].startswith("in ") for r in rows)  # 2030: still ahead
    assert not db.exists()  # preview opens no database


def test_preview_of_an_interval_counts_from_after(db: Path) -> None:
    lines = ok(cli(db, "schedule", "preview", "--every", "90m", "--after",
                   "2030-01-01T00:00:00+01:00", "--json")).lines()
    assert [line["at"] for line in lines] == [
        "2030-01-01T00:30:00Z", "2030-01-01T02:00:00Z", "2030-01-01T03:30:00Z",
        "2030-01-01T05:00:00Z", "2030-01-01T06:30:00Z"]
    after = datetime(2029, 12, 31, 23, tzinfo=UTC)
    assert [datetime.fromisoformat(line["at"]) for line in lines] == next_runs(
        interval=5400, after=after, count=5)


def test_preview_from_now_matches_next_runs(db: Path) -> None:
    lines = ok(cli(db, "schedule", "preview", "--cron", "0 0 1 1 *", "--timezone", "UTC",
                   "-n", "2", "--json")).lines()
    expected = next_runs(cron="0 0 1 1 *", timezone="UTC", count=2)
    assert [datetime.fromisoformat(line["at"]) for line in lines] == expected
    plain = ok(cli(db, "schedule", "preview", "--every", "1d", "-n", "1")).stdout.splitlines()
    assert plain[1].split("\t")[2] in ("in 1d", "in 23h 59m")


@pytest.mark.parametrize(("args", "message"), [
    (["--cron", "* * * * *", "--count", "0"], "--count must be between 1 and 1000"),
    (["--cron", "* * * * *", "--after", "2030-01-01"],
     "--after '2030-01-01' has no timezone: add Z for UTC or an offset such as +01:00"),
    (["--every", "1h", "--timezone", "UTC"],
     "--timezone applies to --cron schedules only (an interval is the same in every timezone)"),
    ([], "give one of --cron and --every"),
])
def test_preview_usage_errors_are_exit_2(db: Path, args: list[str], message: str) -> None:
    assert error(cli(db, "schedule", "preview", *args), 2) == f"error: {message}"


# -- a terminal -------------------------------------------------------------------------------
def test_a_terminal_gets_tables_with_relative_and_absolute_times(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = ok(cli(db, "schedule", "ensure", "rep.v1", "--id", "t", "--every", "1m",
                  "--json")).json()
    first_tick = datetime.fromisoformat(data["next_run"])
    fire(db, first_tick)
    monkeypatch.setattr(core.Session, "mode",
                        property(lambda self: "json" if self.json else "rich"))
    listed = ok(cli(db, "schedule", "list")).stdout
    assert "every 1m" in listed and "active" in listed
    assert re.search(r"in \d+s|in 1m|now|\d+s ago", listed), listed
    shown = ok(cli(db, "schedule", "show", "t")).stdout
    assert "runs (UTC, newest first)" in shown and "started" in shown and "pending" in shown
    assert first_tick.strftime("%Y-%m-%dT%H:%M:%SZ") in shown
    preview = ok(cli(db, "schedule", "preview", "--cron", "0 9 * * *", "--timezone",
                     "Asia/Tokyo", "--after", "2029-12-31T23:00:00Z", "-n", "1")).stdout
    assert "2030-01-01T00:00:00Z" in preview and "2030-01-01T09:00:00+09:00" in preview
    empty = ok(cli(db, "schedule", "remove", "t"))
    assert empty.stdout == "removed t\n"
    assert "no schedules" in ok(cli(db, "schedule", "list")).stdout


def test_relative_times_read_as_people_say_them() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    cases = {5 * 60: "in 5m", 3725: "in 1h 2m", 90000: "in 1d 1h", 45: "in 45s",
             -180: "3m ago", 0.4: "now", 86400 * 3: "in 3d", 125: "in 2m 5s"}
    for seconds, text in cases.items():
        assert relative_text(now + timedelta(seconds=seconds), now) == text
    assert relative_text(None, now) == ""
    assert span_text(7200) == "2h"
    assert every_text(0.5) == "0.5s" and every_text(None) == ""


# -- a daemon fires them ----------------------------------------------------------------------
TICK_WORKFLOW = '''
from durablectl import workflow


@workflow("sched.cli.tick.v1", alias="tick")
async def tick(ctx, data):
    return await ctx.step("echo", lambda: data)
'''


@pytest.mark.skipif(not DURABLECTL.exists(), reason="needs `make install`")
def test_a_daemon_fires_an_every_1s_schedule_and_a_one_time_one(tmp_path: Path) -> None:
    db = tmp_path / "daemon.db"
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "tick_flows.py").write_text(textwrap.dedent(TICK_WORKFLOW))
    config = tmp_path / "durablectl.toml"
    config.write_text(f'workflows = "workflows"\ndb = "{db}"\n[daemon]\ngrace_seconds = 2\n')
    env = process_env(tmp_path)

    def durablectl(*args: str) -> Any:
        return run([str(DURABLECTL), *args, "--db", str(db), "--config", str(config)], env,
                   tmp_path)

    def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"not reached within {timeout:g}s: {what}")
            time.sleep(0.05)

    started = durablectl("daemon", "start", "--json")
    assert started.returncode == 0, started.stderr
    pid = int(json.loads(started.stdout)["pid"])
    try:
        ensured = durablectl("schedule", "ensure", "tick", "--id", "every-second", "--every",
                             "1s", "--input", '{"n": 1}')
        assert ensured.returncode == 0, ensured.stderr
        assert ensured.stderr == ""  # a daemon runs: no note

        def completed_runs() -> list[dict[str, Any]]:
            shown = durablectl("schedule", "show", "every-second", "--json")
            assert shown.returncode == 0, shown.stderr
            runs = json.loads(shown.stdout)["runs"]
            done = [r for r in runs if r["execution_status"] == "completed"]
            return done if len(done) >= 2 else []

        runs = wait_for(completed_runs, "two executions of the every-second schedule")
        assert all(r["outcome"] == "started" for r in runs)
        status = durablectl("status", runs[0]["execution_id"], "--json")
        data = json.loads(status.stdout)
        assert (data["workflow_id"], data["input"], data["result"]) == (
            "sched.cli.tick.v1", {"n": 1}, {"n": 1})
        paused = durablectl("schedule", "pause", "every-second")
        assert (paused.returncode, paused.stdout) == (0, "paused every-second\n")

        once = durablectl("schedule", "add", "tick", "--in", "0s", "--input", "[2]")
        assert once.returncode == 0 and once.stderr == "", once.stderr
        once_id = once.stdout.strip()

        def done() -> dict[str, Any] | None:
            data = json.loads(durablectl("schedule", "show", once_id, "--json").stdout)
            finished = data["schedule"]["status"] == "done" and \
                data["schedule"]["last_execution_status"] == "completed"
            return data if finished else None

        fired = wait_for(done, "the one-time schedule ran")
        assert [r["outcome"] for r in fired["runs"]] == ["started"]
        listing = durablectl("schedule", "list")
        rows = {line.split("\t")[0]: line.split("\t") for line in listing.stdout.splitlines()}
        assert rows[once_id][6] == "done" and rows[once_id][12] == "completed"
        assert rows["every-second"][6:8] == ["paused", "operator"]
    finally:
        stopped = durablectl("daemon", "stop")
        if stopped.returncode != 0:
            with contextlib.suppress(ProcessLookupError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"durablectl" in cmdline:  # still there: never leave it behind
                    os.kill(pid, signal.SIGKILL)
