"""The execution commands of SPEC §6 as typer declares them: start, signal, status, show,
list, wait, cancel, recover, workflows.

This module is the one definition of their arguments, options and help (``--help`` and the man
pages read it). What each command does lives in ``durablectl.cli.actions``, free of typer, and
the hot read commands can run it without typer through ``durablectl.cli.fast``, whose table a
test holds equal to the options declared here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from durablectl.cli import actions
from durablectl.cli.common import (
    ConfigOption,
    DbOption,
    DebugOption,
    JsonOption,
    Session,
    command,
)

ExecutionArg = Annotated[str, typer.Argument(
    metavar="EXECUTION", help="The execution id.", show_default=False)]


@command
def start(
    workflow: Annotated[str, typer.Argument(
        metavar="WORKFLOW", help="The workflow id or alias.", show_default=False)],
    input: Annotated[str | None, typer.Option(
        "--input", "-i", metavar="JSON",
        help="The input: inline JSON, @file, or - for stdin.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", "-k", metavar="KEY",
        help="Start at most once per key and workflow: the same key prints the existing "
             "execution's id.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", "-w", help="Then wait for it and print its result (exit 1 if it fails or is "
                             "cancelled).")] = False,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Start an execution of WORKFLOW and print its id.

    The id is printed alone, so that ID=$(durablectl start WORKFLOW) works; with --json it is
    {"execution_id": ...}. With --wait, the result follows once the execution finishes (with
    --json and --wait: the execution object instead).

    A workflow id that no worker has recorded is refused (exit 3, listing the known ids) once any
    worker has recorded its workflows. Without a running daemon the execution is stored, and a
    note on stderr says that it waits for one.
    """
    actions.start(Session(db, config, json, debug), workflow, input, idempotency_key, wait)


@command
def signal(
    execution: ExecutionArg,
    signal: Annotated[str, typer.Argument(
        metavar="SIGNAL", help="The signal id.", show_default=False)],
    payload: Annotated[str | None, typer.Option(
        "--payload", "-p", metavar="JSON",
        help="The payload: inline JSON, @file, or - for stdin (default: null).")] = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Send SIGNAL to an execution.

    Prints nothing on success; with --json, {"execution_id", "signal", "seq"}. The signal is
    stored even when no daemon runs (a note on stderr says so), and waits consume signals in the
    order they were sent. Exit 3 for an unknown execution, 2 for one that has finished.
    """
    actions.signal(Session(db, config, json, debug), execution, signal, payload)


@command
def status(
    execution: ExecutionArg,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show an execution's status.

    Its workflow, status and reason, attempt, times, input, and result or error. Exit 0 whatever
    the execution's state; 3 when the id is unknown.
    """
    actions.status(Session(db, config, json, debug), execution)


@command
def show(
    execution: ExecutionArg,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show an execution and its timeline.

    One row per status change, step, sleep, signal wait and delivery, emit, switch, note, retry
    and operator action, with time (UTC), kind, step id, duration and attempt; ids the library
    makes are dimmed and errors are printed in full. With --json: {"execution", "steps",
    "audit"}. Exit 3 when the id is unknown.
    """
    actions.show(Session(db, config, json, debug), execution)


@command
def list_executions(
    status: Annotated[str | None, typer.Option(
        "--status", "-s", metavar="STATUS",
        help="Only these statuses, comma-separated: pending, running, sleeping, waiting, "
             "retrying, completed, failed, compensation_failed, cancelled; or active, "
             "finished.")] = None,
    workflow: Annotated[str | None, typer.Option(
        "--workflow", "-w", metavar="WORKFLOW",
        help="Only executions of this workflow id (or alias).")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", metavar="N", help="At most N executions, newest first.")] = 100,
    offset: Annotated[int, typer.Option(
        "--offset", metavar="N", help="Skip the N newest first.")] = 0,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List executions, newest first.

    A table on a terminal, tab-separated lines under a header when piped, one JSON object per
    line with --json. When there are more than --limit, a note on stderr gives the next
    --offset.
    """
    actions.list_executions(Session(db, config, json, debug), status, workflow, limit,
                            offset)


@command
def wait(
    execution: ExecutionArg,
    timeout: Annotated[str | None, typer.Option(
        "--timeout", "-t", metavar="DURATION",
        help="Give up after this long (seconds, or 30s, 10m, 2h, 1d): exit 5; the execution "
             "goes on.")] = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Wait until an execution finishes and print its result.

    A live status line on a terminal; then the result as JSON, or with --json the execution
    object. Exit 1 when the execution failed or was cancelled (the error on stderr), 3 when the
    id is unknown, 5 when --timeout ran out.
    """
    actions.wait(Session(db, config, json, debug), execution, timeout)


@command
def cancel(
    execution: ExecutionArg,
    reason: Annotated[str | None, typer.Option(
        "--reason", "-r", metavar="TEXT", help="Why; recorded with the execution.")] = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Cancel an active execution.

    A parked execution is cancelled at once, a running one at its next durable call;
    compensations are not run. With --json, prints the execution object. Exit 2 for an
    execution that has finished, 3 for an unknown one.
    """
    actions.cancel(Session(db, config, json, debug), execution, reason)


@command
def recover(
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Re-queue the executions of workers that are gone.

    A live worker then takes them over. Prints how many (with --json: {"recovered": n}).
    """
    actions.recover(Session(db, config, json, debug))


@command
def workflows(
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List the workflows workers have recorded.

    Each workflow id with its alias and how many executions are in flight on it (not finished);
    ids with executions in flight that no worker has recorded are listed too. With --json: one
    {"workflow_id", "alias", "in_flight"} object per line.
    """
    actions.workflows(Session(db, config, json, debug))


@command
def prune(
    older_than: Annotated[str, typer.Option(
        "--older-than", help="Age of the last change: seconds or 30s, 10m, 2h, 30d.")],
    status: Annotated[str | None, typer.Option(
        "--status", "-s", help="Finished statuses to remove, comma separated "
                               "(default: all finished ones).")] = None,
    vacuum: Annotated[bool, typer.Option(
        "--vacuum", help="Compact the file afterwards.")] = False,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Remove finished executions with their history.

    Deletes, in small batches, executions that finished (completed, failed,
    compensation_failed, cancelled, or those given with --status) and have not changed for
    --older-than, with their steps, signals, timers and audit entries. Prints how many (with
    --json: {"deleted", "size_before", "size_after"}).
    """
    actions.prune(Session(db, config, json, debug), older_than, status, vacuum)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app, in the order of SPEC §6."""
    app.command("start")(start)
    app.command("signal")(signal)
    app.command("status")(status)
    app.command("show")(show)
    app.command("list")(list_executions)
    app.command("wait")(wait)
    app.command("cancel")(cancel)
    app.command("recover")(recover)
    app.command("workflows")(workflows)
    app.command("prune")(prune)
