"""What the schedule commands do: add, ensure, list, show, pause, resume, update, remove,
preview. Their options are declared in ``durablectl.cli.schedule_cmds`` (typer); the bodies and
their output live here, free of typer, as ``durablectl.cli.actions`` is for the execution
commands.

Built on the library's ``ScheduleManager`` (what ``DurableClient``'s schedule methods call),
given the configuration's ``[schedules]`` defaults for ``catch_up`` and ``overlap`` and the
schedule id of ``add --id``. Nothing here imports asyncio or the engine. A write commits, then
nudges the database's daemon so that it re-arms at once; without a running worker the schedule
is stored and a ``note:`` says that it fires when one runs. Read commands never create a missing
database. Every action closes its session.

Times on the command line are ISO 8601 with a timezone (``Z`` or an offset): a time without one
is refused (exit 2) rather than guessed. Shown times are UTC; next and last runs are also shown
relative to now (``in 5m``, ``3m ago``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from durablectl.cli import render
from durablectl.cli.core import Session, fail, note, parse_duration, read_json_argument
from durablectl.errors import ScheduleNotFound
from durablectl.model import to_json

if TYPE_CHECKING:
    from durablectl.model import Schedule, ScheduleRun
    from durablectl.schedules import ScheduleManager

CATCH_UP_POLICIES = ("one", "all", "none")
OVERLAP_POLICIES = ("allow", "skip", "queue")
MAX_PREVIEW = 1000

SCHEDULE_STYLES = {"active": "green", "paused": "yellow", "done": "bright_black"}
OUTCOME_STYLES = {"started": "green", "skipped": "yellow", "queued": "blue", "missed": "red"}


# -- arguments --------------------------------------------------------------------------------
def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time with a timezone, as an aware UTC datetime; exit 2 otherwise."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"bad time {text!r} for {option}: use ISO 8601 with a timezone, such as "
                   "2030-01-31T09:00:00Z or 2030-01-31T09:00:00+01:00") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise fail(f"{option} {text!r} has no timezone: add Z for UTC or an offset such as "
                   "+01:00")
    return value.astimezone(UTC)


def parse_interval(text: str, option: str = "--every") -> float:
    """A duration of more than zero seconds; exit 2 otherwise."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise fail(f"bad duration {text!r} for {option}: it must be more than zero")
    return seconds


def _choice(value: str | None, option: str, accepted: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    chosen = value.strip().lower()
    if chosen not in accepted:
        raise fail(f"unknown {option} {value!r} (use {', '.join(accepted)})")
    return chosen


def _one_recurrence(cron: str | None, every: str | None, timezone: str | None) -> float | None:
    """Exactly one of --cron and --every (the interval in seconds, or None for a cron);
    --timezone only with --cron."""
    if (cron is None) == (every is None):
        raise fail("give one of --cron and --every")
    if every is not None and timezone is not None:
        raise fail("--timezone applies to --cron schedules only (an interval is the same "
                   "in every timezone)")
    return None if every is None else parse_interval(every)


# -- helpers ----------------------------------------------------------------------------------
def _existing_store(session: Session) -> Any:
    """The store, or None when the database file does not exist yet: a command on a schedule
    must not create an empty database because of a typo in --db."""
    if not os.path.exists(session.db_path):
        return None
    return session.store


def _existing_schedule(session: Session, schedule_id: str) -> tuple[Any, Schedule]:
    store = _existing_store(session)
    found = None if store is None else store.get_schedule(schedule_id)
    if found is None:
        raise ScheduleNotFound(schedule_id)
    return store, found


def _manager(session: Session) -> ScheduleManager:
    """The library's schedule calls on this database, with the configured defaults."""
    from durablectl.clock import SystemClock
    from durablectl.schedules import ScheduleManager

    config = session.config
    return ScheduleManager(session.store, SystemClock(), catch_up=config.schedules.catch_up,
                           overlap=config.schedules.overlap,
                           max_payload_bytes=config.limits.max_payload_bytes)


def _ready_to_nudge() -> None:
    """Import what ``Session.nudge`` needs before committing, so that the nudge follows the
    commit at once."""
    import durablectl.daemon.ipc
    import durablectl.daemon.paths  # noqa: F401


def _wrote(session: Session, schedule_id: str, *, fires: bool) -> None:
    """After a commit: wake the daemon; when nothing runs and the schedule is to fire, say so."""
    session.nudge()
    if fires and not session.store.live_workers():
        note(f"no daemon is running for {session.db_path}: schedule {schedule_id} fires when "
             "one runs (durablectl daemon start)")


def _now() -> datetime:
    from durablectl.clock import SystemClock

    return SystemClock().now()


# -- text -------------------------------------------------------------------------------------
def span_text(seconds: float) -> str:
    """A positive span for people, at most two units: ``45s``, ``5m``, ``2h 5m``, ``1d 3h``."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def relative_text(when: datetime | None, now: datetime) -> str:
    """``in 5m``, ``3m ago`` or ``now`` (under a second either way); empty for no time."""
    if when is None:
        return ""
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {span_text(seconds)}" if seconds > 0 else f"{span_text(-seconds)} ago"


def every_text(seconds: float | None) -> str:
    """An interval in the largest unit that divides it, as ``--every`` reads it: ``90s``,
    ``15m``, ``2h``, ``1d``."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and float(seconds) % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def utc_text(when: datetime | None) -> str:
    """An absolute time: ISO 8601 in UTC to the second, with a ``Z``."""
    return "" if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recurrence_text(schedule: Schedule) -> str:
    if schedule.kind == "cron":
        return schedule.cron or ""
    if schedule.kind == "interval":
        return f"every {every_text(schedule.interval_seconds)}"
    return "once"


def _next_run(schedule: Schedule) -> datetime | None:
    """The next run that will happen: none for a paused or finished schedule."""
    return schedule.next_run if schedule.status == "active" else None


def _timezone(schedule: Schedule) -> str:
    """The zone a schedule's times are read in: only a cron expression has one."""
    return (schedule.timezone or "") if schedule.kind == "cron" else ""


def _status(schedule: Schedule) -> str:
    return schedule.status + (f" ({schedule.paused_reason})" if schedule.paused_reason else "")


def _when(when: datetime | None, now: datetime) -> str:
    return "" if when is None else f"{utc_text(when)} ({relative_text(when, now)})"


def schedule_fields(schedule: Schedule, now: datetime) -> list[tuple[str, str]]:
    fields = [("schedule", schedule.id), ("workflow", schedule.workflow_id),
              ("kind", schedule.kind)]
    if schedule.kind == "cron":
        fields += [("cron", schedule.cron or ""), ("timezone", _timezone(schedule))]
    elif schedule.kind == "interval":
        fields.append(("every", every_text(schedule.interval_seconds)))
    fields += [
        ("status", _status(schedule)),
        ("next run", _when(_next_run(schedule), now)),
        ("last run", _when(schedule.last_run, now)),
        ("last execution", " ".join(v for v in (schedule.last_execution_id,
                                                schedule.last_execution_status) if v)),
        ("input", render.json_text(schedule.input)),
    ]
    if schedule.kind != "once":
        fields += [("catch up", schedule.catch_up), ("overlap", schedule.overlap)]
    if schedule.declared:
        fields.append(("declared", "with its workflow (@workflow(..., schedule=))"))
    return fields


def _print_fields(fields: list[tuple[str, str]], status: str | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields:
        style = SCHEDULE_STYLES.get(status or "", "") if key == "status" else ""
        table.add_row(key, Text(value, style=style))
    render.rich_console().print(table)


def print_schedule(session: Session, schedule: Schedule) -> None:
    """One schedule: its object with --json, else its fields."""
    if session.mode == "json":
        render.emit_json(to_json(schedule))
        return
    fields = schedule_fields(schedule, _now())
    if session.mode == "plain":
        print("\n".join(f"{key}\t{render.tsv_cell(value)}" for key, value in fields))
        return
    _print_fields(fields, schedule.status)


LIST_HEADER = ["id", "workflow_id", "kind", "cron", "every", "timezone", "status",
               "paused_reason", "next_run", "next_run_in", "last_run", "last_execution_id",
               "last_execution_status"]


def print_schedule_list(session: Session, schedules: list[Schedule]) -> None:
    """``list``: JSON lines, a table, or tab-separated lines under a header."""
    if session.mode == "json":
        render.emit_json_lines([to_json(s) for s in schedules])
        return
    now = _now()
    if session.mode == "plain":
        render.tsv(LIST_HEADER, [
            [s.id, s.workflow_id, s.kind, s.cron, every_text(s.interval_seconds),
             _timezone(s), s.status, s.paused_reason, utc_text(_next_run(s)),
             relative_text(_next_run(s), now), utc_text(s.last_run), s.last_execution_id,
             s.last_execution_status] for s in schedules])
        return
    from rich.table import Table
    from rich.text import Text

    if not schedules:
        render.rich_console().print(Text("no schedules", style="dim"))
        return
    table = Table()
    table.add_column("schedule", overflow="fold")
    table.add_column("workflow", overflow="fold")
    table.add_column("when", overflow="fold")  # its kind, cron and zone, interval
    table.add_column("status")
    table.add_column("next run", overflow="fold")
    table.add_column("last run", overflow="fold")
    table.add_column("last execution", overflow="fold")
    for s in schedules:
        status = Text(s.status, style=SCHEDULE_STYLES.get(s.status, ""))
        if s.paused_reason:
            status.append(f"\n({s.paused_reason})", style="dim")
        last = Text(s.last_execution_id or "")
        if s.last_execution_status:
            last.append(" ")
            last.append_text(render.status_text(s.last_execution_status))
        when = Text(recurrence_text(s))
        if _timezone(s):
            when.append("\n" + _timezone(s), style="dim")
        table.add_row(Text(s.id), Text(s.workflow_id), when, status,
                      _two_lines(_next_run(s), now), _two_lines(s.last_run, now), last)
    render.rich_console().print(table)


def _two_lines(when: datetime | None, now: datetime) -> Any:
    """Relative, then absolute (UTC, dimmed) below it: one narrow column of a table."""
    from rich.text import Text

    text = Text(relative_text(when, now))
    if when is not None:
        text.append("\n" + utc_text(when), style="dim")
    return text


RUNS_HEADER = ["due_at", "outcome", "execution_id", "execution_status", "missed_count",
               "recorded_at"]


def print_schedule_detail(session: Session, schedule: Schedule,
                          runs: list[tuple[ScheduleRun, str | None]]) -> None:
    """``show``: the schedule, then its runs, newest first."""
    if session.mode == "json":
        render.emit_json({"schedule": to_json(schedule),
                          "runs": [{**to_json(run), "execution_status": status}
                                   for run, status in runs]})
        return
    if session.mode == "plain":
        print_schedule(session, schedule)
        print()
        render.tsv(RUNS_HEADER, [[utc_text(r.due_at), r.outcome, r.execution_id, status,
                                  r.missed_count, utc_text(r.recorded_at)]
                                 for r, status in runs])
        return
    from rich.table import Table
    from rich.text import Text

    print_schedule(session, schedule)
    render.rich_console().print()
    table = Table(title="runs (UTC, newest first)", title_justify="left", title_style="bold")
    for title in ("due", "outcome", "execution", "missed", "recorded"):
        table.add_column(title, justify="right" if title == "missed" else "left")
    for run, status in runs:
        execution = Text(run.execution_id or "")
        if status:
            execution.append(" ")
            execution.append_text(render.status_text(status))
        table.add_row(utc_text(run.due_at),
                      Text(run.outcome, style=OUTCOME_STYLES.get(run.outcome, "")), execution,
                      str(run.missed_count) if run.missed_count else "",
                      Text(utc_text(run.recorded_at), style="dim"))
    if not runs:
        table.add_row(Text("(no runs yet)", style="dim"), "", "", "", "")
    render.rich_console().print(table)


# -- the commands -----------------------------------------------------------------------------
def add(session: Session, workflow: str, input: str | None, at: str | None, in_: str | None,
        schedule_id: str | None) -> None:
    try:
        if (at is None) == (in_ is None):
            raise fail("give one of --at and --in")
        when = None if at is None else parse_time(at, "--at")
        delay = None if in_ is None else parse_duration(in_)
        value = read_json_argument(input, "--input")  # before the database is opened
        manager = _manager(session)
        if schedule_id is not None and session.store.get_schedule(schedule_id) is not None:
            raise fail(f"schedule {schedule_id!r} already exists (durablectl schedule remove "
                       f"{schedule_id} first)")
        _ready_to_nudge()
        created_id = manager.schedule(workflow, value, at=when, delay=delay, id=schedule_id)
        if session.json:
            render.emit_json(to_json(session.store.get_schedule(created_id)))
        else:
            print(created_id, flush=True)
        _wrote(session, created_id, fires=True)
        if when is not None and when < _now():
            note(f"--at {at} has passed: schedule {created_id} runs as soon as a worker sees "
                 "it")
    finally:
        session.close()


def ensure(session: Session, workflow: str, schedule_id: str, cron: str | None,
           every: str | None, timezone: str | None, input: str | None, catch_up: str | None,
           overlap: str | None) -> None:
    try:
        interval = _one_recurrence(cron, every, timezone)
        catch_up = _choice(catch_up, "--catch-up", CATCH_UP_POLICIES)
        overlap = _choice(overlap, "--overlap", OVERLAP_POLICIES)
        value = read_json_argument(input, "--input")
        manager = _manager(session)
        _ready_to_nudge()
        schedule = manager.ensure_schedule(workflow, value, id=schedule_id, cron=cron,
                                           interval=interval, timezone=timezone,
                                           catch_up=catch_up, overlap=overlap)
        print_schedule(session, schedule)
        _wrote(session, schedule.id, fires=schedule.status == "active")
    finally:
        session.close()


def list_schedules(session: Session) -> None:
    try:
        store = _existing_store(session)
        print_schedule_list(session, [] if store is None else store.list_schedules())
    finally:
        session.close()


def show(session: Session, schedule_id: str, limit: int) -> None:
    try:
        if limit < 0:
            raise fail("--limit must be zero or more")
        store, schedule = _existing_schedule(session, schedule_id)
        runs: list[tuple[ScheduleRun, str | None]] = []
        for run in store.list_schedule_runs(schedule_id, limit=limit):
            execution = None if run.execution_id is None else store.get_execution(
                run.execution_id)  # None too when it was pruned
            runs.append((run, None if execution is None else execution.status))
        print_schedule_detail(session, schedule, runs)
    finally:
        session.close()


def pause(session: Session, schedule_id: str) -> None:
    try:
        _existing_schedule(session, schedule_id)
        _ready_to_nudge()
        schedule = _manager(session).pause_schedule(schedule_id)
        session.nudge()
        if session.json:
            render.emit_json(to_json(schedule))
        else:
            print(f"paused {schedule.id}")
    finally:
        session.close()


def resume(session: Session, schedule_id: str) -> None:
    try:
        _existing_schedule(session, schedule_id)
        _ready_to_nudge()
        schedule = _manager(session).resume_schedule(schedule_id)
        if session.json:
            render.emit_json(to_json(schedule))
        else:
            when = _when(_next_run(schedule), _now())
            print(f"resumed {schedule.id}" + (f": next run {when}" if when else ""))
        _wrote(session, schedule.id, fires=schedule.status == "active")
    finally:
        session.close()


def remove(session: Session, schedule_id: str) -> None:
    try:
        _existing_schedule(session, schedule_id)
        _ready_to_nudge()
        _manager(session).remove_schedule(schedule_id)
        session.nudge()
        if session.json:
            render.emit_json({"id": schedule_id, "removed": True})
        else:
            print(f"removed {schedule_id}")
    finally:
        session.close()


def update(session: Session, schedule_id: str, cron: str | None, every: str | None,
           input: str | None, timezone: str | None, catch_up: str | None,
           overlap: str | None) -> None:
    try:
        changes: dict[str, Any] = {}
        if cron is not None and every is not None:
            raise fail("give one of --cron and --every")
        if cron is not None:
            changes["cron"] = cron
        if every is not None:
            if timezone is not None:
                raise fail("--timezone applies to --cron schedules only (an interval is the "
                           "same in every timezone)")
            changes["interval"] = parse_interval(every)
        if timezone is not None:
            changes["timezone"] = timezone
        if catch_up is not None:
            changes["catch_up"] = _choice(catch_up, "--catch-up", CATCH_UP_POLICIES)
        if overlap is not None:
            changes["overlap"] = _choice(overlap, "--overlap", OVERLAP_POLICIES)
        if input is not None:  # --input null sets a null input
            changes["input"] = read_json_argument(input, "--input")
        if not changes:
            raise fail("nothing to update: give --cron, --every, --input, --timezone, "
                       "--catch-up or --overlap")
        _store, current = _existing_schedule(session, schedule_id)
        if timezone is not None and cron is None and current.kind == "interval":
            raise fail(f"--timezone applies to --cron schedules only: schedule {schedule_id!r} "
                       f"runs every {every_text(current.interval_seconds)}")
        _ready_to_nudge()
        schedule = _manager(session).update_schedule(schedule_id, **changes)
        print_schedule(session, schedule)
        _wrote(session, schedule.id, fires=schedule.status == "active")
    finally:
        session.close()


def preview(session: Session, cron: str | None, every: str | None, timezone: str | None,
            count: int, after: str | None) -> None:
    from zoneinfo import ZoneInfo

    from durablectl.schedules import next_runs
    from durablectl.scheduling import validate_timezone

    interval = _one_recurrence(cron, every, timezone)
    if not 1 <= count <= MAX_PREVIEW:
        raise fail(f"--count must be between 1 and {MAX_PREVIEW}")
    start = None if after is None else parse_time(after, "--after")
    ticks = next_runs(cron=cron, interval=interval, timezone=timezone, after=start,
                      count=count)
    zone_name = validate_timezone(timezone)
    zone = ZoneInfo(zone_name)
    local = [tick.astimezone(zone).isoformat() for tick in ticks]
    if session.mode == "json":
        render.emit_json_lines([{"at": render.iso(tick), "local": text}
                                for tick, text in zip(ticks, local, strict=True)])
        return
    now = _now()
    if session.mode == "plain":
        render.tsv(["at", "local", "in"], [[render.iso(tick), text, relative_text(tick, now)]
                                           for tick, text in zip(ticks, local, strict=True)])
        return
    from rich.table import Table
    from rich.text import Text

    title = cron if cron is not None else f"every {every_text(interval)}"
    table = Table(title=f"next runs of {title}", title_justify="left", title_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("UTC")
    table.add_column(zone_name)
    table.add_column("in")
    for number, (tick, text) in enumerate(zip(ticks, local, strict=True), start=1):
        table.add_row(str(number), render.iso(tick), Text(text, style="cyan"),
                      relative_text(tick, now))
    render.rich_console().print(table)
