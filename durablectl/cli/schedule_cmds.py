"""``durablectl schedule add|ensure|list|show|pause|resume|update|remove|preview``.

This module is the one definition of their arguments, options and help (``--help`` and the man
pages read it); what each command does lives in ``durablectl.cli.schedule_actions``, free of
typer.
"""

from __future__ import annotations

from typing import Annotated

import typer

from durablectl.cli import schedule_actions as actions
from durablectl.cli.common import (
    ConfigOption,
    DbOption,
    DebugOption,
    JsonOption,
    Session,
    command,
)

app = typer.Typer(
    help="Add, list, inspect, pause, resume, change and remove schedules, and preview when "
         "they fire.\n\n"
         "A schedule starts executions of a workflow once, on a cron expression, or at an "
         "interval; a running daemon fires them. Times are ISO 8601 with a timezone (Z or an "
         "offset such as +01:00); durations are seconds or 30s, 10m, 2h, 1d.",
    no_args_is_help=True)

ScheduleArg = Annotated[str, typer.Argument(
    metavar="SCHEDULE", help="The schedule id.", show_default=False)]
WorkflowArg = Annotated[str, typer.Argument(
    metavar="WORKFLOW", help="The workflow id or alias.", show_default=False)]
InputOption = Annotated[str | None, typer.Option(
    "--input", "-i", metavar="JSON",
    help="The input of each execution: inline JSON, @file, or - for stdin (default: null).")]
CronOption = Annotated[str | None, typer.Option(
    "--cron", metavar="EXPR",
    help="A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with "
         "the seconds first, or an alias such as @daily.")]
EveryOption = Annotated[str | None, typer.Option(
    "--every", metavar="DURATION",
    help="An interval: seconds, or 30s, 10m, 2h, 1d (fixed rate from when it was set).")]
TimezoneOption = Annotated[str | None, typer.Option(
    "--timezone", metavar="TZ",
    help="The IANA timezone the cron expression runs in, such as Europe/Paris (default: the "
         "machine's).")]
CatchUpOption = Annotated[str | None, typer.Option(
    "--catch-up", metavar="one|all|none",
    help="After downtime, run once for all missed ticks, once per missed tick, or not at all "
         "(default: the configuration's [schedules] catch_up, one).")]
OverlapOption = Annotated[str | None, typer.Option(
    "--overlap", metavar="allow|skip|queue",
    help="When the previous execution still runs at a tick: start another, skip the tick, or "
         "start one when it finishes (default: the configuration's [schedules] overlap, "
         "allow).")]


@app.command("add")
@command
def add(
    workflow: WorkflowArg,
    input: InputOption = None,
    at: Annotated[str | None, typer.Option(
        "--at", metavar="TIME",
        help="When: ISO 8601 with a timezone, such as 2030-01-31T09:00:00Z or "
             "2030-01-31T09:00+01:00 (a time without one is refused).")] = None,
    in_: Annotated[str | None, typer.Option(
        "--in", metavar="DURATION", help="When, from now: seconds, or 30s, 10m, 2h, 1d.")] = None,
    id: Annotated[str | None, typer.Option(
        "--id", metavar="ID",
        help="The schedule id (default: once-<random>); refused when it exists.")] = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Schedule one execution of WORKFLOW, at a time (--at) or after a delay (--in).

    Prints the schedule id alone, so that ID=$(durablectl schedule add WORKFLOW --in 10m)
    works; with --json, the schedule object. A one-time schedule runs once, however late (a time
    that has passed runs as soon as a worker sees it), then is done. Exit 3 for a workflow no
    worker has recorded once any worker has recorded its workflows.
    """
    actions.add(Session(db, config, json, debug), workflow, input, at, in_, id)


@app.command("ensure")
@command
def ensure(
    workflow: WorkflowArg,
    id: Annotated[str, typer.Option(
        "--id", metavar="ID", help="The schedule id.", show_default=False)],
    cron: CronOption = None,
    every: EveryOption = None,
    timezone: TimezoneOption = None,
    input: InputOption = None,
    catch_up: CatchUpOption = None,
    overlap: OverlapOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Create or update a recurring schedule of WORKFLOW (--cron or --every) and print it.

    Idempotent: the same arguments change nothing, not even the next run; different ones update
    the schedule and re-arm it. It never changes the status: a paused schedule stays paused.
    With --json, the schedule object. Exit 2 for a bad cron expression, timezone, duration or
    policy (nothing is stored), or an id that belongs to another workflow.
    """
    actions.ensure(Session(db, config, json, debug), workflow, id, cron, every, timezone,
                   input, catch_up, overlap)


@app.command("list")
@command
def list_schedules(
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List the schedules.

    Each with its workflow, kind, cron expression or interval, timezone, status, next run
    (relative, and absolute in UTC), last run, and last execution with its status. A table on a
    terminal, tab-separated lines under a header when piped, one schedule object per line with
    --json.
    """
    actions.list_schedules(Session(db, config, json, debug))


@app.command("show")
@command
def show(
    schedule: ScheduleArg,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", metavar="N", help="At most N runs, newest first.")] = 50,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a schedule and the history of its runs.

    One row per tick: its due time (UTC), its outcome (started, skipped, queued or missed, with
    how many ticks a catch-up covered), and the execution it started with that execution's
    status. With --json: {"schedule": {...}, "runs": [...]}. Exit 3 when the id is unknown.
    """
    actions.show(Session(db, config, json, debug), schedule, limit)


@app.command("pause")
@command
def pause(
    schedule: ScheduleArg,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Pause a schedule: it fires no more until resumed.

    With --json, prints the schedule object. Exit 2 for a one-time schedule that is done, 3 for
    an unknown id.
    """
    actions.pause(Session(db, config, json, debug), schedule)


@app.command("resume")
@command
def resume(
    schedule: ScheduleArg,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Resume a paused schedule at its next future tick.

    The ticks it missed while paused are not run. Prints the next run; with --json, the schedule
    object. Exit 2 for a one-time schedule that is done, 3 for an unknown id.
    """
    actions.resume(Session(db, config, json, debug), schedule)


@app.command("update")
@command
def update(
    schedule: ScheduleArg,
    cron: CronOption = None,
    every: EveryOption = None,
    input: Annotated[str | None, typer.Option(
        "--input", "-i", metavar="JSON",
        help="The new input: inline JSON, @file, or - for stdin (null sets a null "
             "input).")] = None,
    timezone: TimezoneOption = None,
    catch_up: CatchUpOption = None,
    overlap: OverlapOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Change a recurring schedule: only the options given change.

    --cron on an interval schedule (or --every on a cron one) changes its kind. The schedule is
    re-armed and printed (with --json, the schedule object); its status does not change. Exit 2
    when no option is given or a value is bad, 3 for an unknown id.
    """
    actions.update(Session(db, config, json, debug), schedule, cron, every, input, timezone,
                   catch_up, overlap)


@app.command("remove")
@command
def remove(
    schedule: ScheduleArg,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Remove a schedule, with its timer and its run history.

    The executions it started are kept. With --json, prints {"id", "removed"}. Exit 3 for an
    unknown id.
    """
    actions.remove(Session(db, config, json, debug), schedule)


@app.command("preview")
@command
def preview(
    cron: CronOption = None,
    every: EveryOption = None,
    timezone: TimezoneOption = None,
    count: Annotated[int, typer.Option(
        "--count", "-n", metavar="N", help="How many runs.")] = 5,
    after: Annotated[str | None, typer.Option(
        "--after", metavar="TIME",
        help="Start from this ISO 8601 time with a timezone instead of now (an interval "
             "counts from it).")] = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Print when a cron expression (--cron) or an interval (--every) fires next.

    Nothing is stored and no database is opened. Each run in UTC and in the timezone (the
    machine's unless --timezone says), with how far off it is. With --json, one {"at", "local"}
    object per line. Exit 2 for a bad cron expression, timezone or duration.
    """
    actions.preview(Session(db, config, json, debug), cron, every, timezone, count, after)
