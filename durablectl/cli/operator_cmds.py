"""``durablectl operator retry|fork|skip-step|force-fail|edit-state|retry-rollback|stuck``.

This module is the one definition of their arguments, options and help (``--help`` and the man
pages read it); what each command does lives in ``durablectl.cli.operator_actions``, free of
typer.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from durablectl.cli import operator_actions as actions
from durablectl.cli.common import (
    ConfigOption,
    DbOption,
    DebugOption,
    JsonOption,
    Session,
    command,
)

app = typer.Typer(
    help="Repair executions: retry a failed one, resume a failed rollback, settle or edit a "
         "step, fail one by hand, fork one from a step, and list those that need an "
         "operator.\n\n"
         "Each action checks that the execution is in a status it accepts (exit 2 otherwise, "
         "naming the status and the accepted ones; 3 for an unknown execution, 2 for an "
         "unknown step) and is recorded in the execution's audit trail with the OS user and "
         "--reason. An action that lets an execution run again leaves it pending, and the "
         "database's daemon is woken to run it; without a daemon a note says that it runs "
         "when one does. Values are JSON given inline, as @file, or - for standard input.",
    no_args_is_help=True)

ExecutionArg = Annotated[str, typer.Argument(
    metavar="EXECUTION", help="The execution id.", show_default=False)]
ReasonOption = Annotated[str | None, typer.Option(
    "--reason", "-r", metavar="TEXT", help="Why; recorded in the audit trail.")]


def _step_option(help: str) -> Any:
    return typer.Option("--step", "-s", metavar="STEP", help=help, show_default=False)


@app.command("retry")
@command
def retry(
    execution: ExecutionArg,
    reason: ReasonOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run a failed execution again from its last stored step.

    It runs as a new attempt: completed steps return their stored results without running,
    failed steps run again with the code the daemon has loaded now. The retry is one more
    attempt (max_attempts is raised to it when the execution had used them all). Prints the
    execution id; with --json, the execution object. Exit 2 unless the execution is failed.
    """
    actions.retry(Session(db, config, json, debug), execution, reason)


@app.command("fork")
@command
def fork(
    execution: ExecutionArg,
    step: Annotated[str, _step_option(
        "The step to run again: the new execution keeps the history recorded before it.")],
    reason: ReasonOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Start a new execution that copies the history before a step and runs from there.

    For "fix the code, re-run from step X": the new execution has the same workflow and
    input, a copy of the steps recorded before STEP (a sleep or signal wait the execution is
    parked on counts too), and runs STEP and what follows with the code loaded now. The
    original is left as it is, whatever its status. Prints the new execution's id; with
    --json, its execution object (forked_from names the original).
    """
    actions.fork(Session(db, config, json, debug), execution, step, reason)


@app.command("skip-step")
@command
def skip_step(
    execution: ExecutionArg,
    step: Annotated[str, _step_option(
        "The step to settle: a stored step (failed or not), or a sleep or signal wait the "
        "execution is parked on.")],
    value: Annotated[str | None, typer.Option(
        "--value", metavar="JSON",
        help="What the step returns from now on (a signal wait: the payload): inline JSON, "
             "@file, or - for stdin (default: null).")] = None,
    reason: ReasonOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Record a value as a step's result and let the execution go on.

    Replay returns the value at that step instead of running it. A failed or retrying
    execution resumes as a new attempt, a compensation_failed one resumes its rollback (for a
    compensation done by hand, skip its rollback:STEP), a sleeping or waiting one wakes at
    once. Prints the execution id; with --json, the execution object. Exit 2 while the
    execution is running or once it completed or was cancelled.
    """
    actions.skip_step(Session(db, config, json, debug), execution, step, value, reason)


@app.command("force-fail")
@command
def force_fail(
    execution: ExecutionArg,
    reason: ReasonOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """End an active execution as failed, with the reason as its error.

    Its timers are cancelled and a run in progress stops at its next durable call;
    compensations are not run. The error is of type ForceFailed. Prints the execution id;
    with --json, the execution object. Exit 2 for an execution that has finished.
    """
    actions.force_fail(Session(db, config, json, debug), execution, reason)


@app.command("edit-state")
@command
def edit_state(
    execution: ExecutionArg,
    step: Annotated[str, _step_option("The stored step whose result to overwrite.")],
    value: Annotated[str, typer.Option(
        "--value", metavar="JSON",
        help="The new result: inline JSON, @file, or - for stdin.", show_default=False)],
    reason: ReasonOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Overwrite the stored result of a step.

    The next replay returns the new value there (a failed step becomes completed). The
    status does not change: a parked execution sees the value when it wakes, a failed one
    when it is retried. Prints the execution id; with --json, the execution object. Exit 2
    while the execution is running, once it completed or was cancelled (fork it instead), or
    for a step with no stored result.
    """
    actions.edit_state(Session(db, config, json, debug), execution, step, value, reason)


@app.command("retry-rollback")
@command
def retry_rollback(
    execution: ExecutionArg,
    reason: ReasonOption = None,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Resume a compensation_failed execution from its failed compensation.

    The failed compensation's record is removed and the execution resumes in the same
    attempt: replay returns to the rollback, skips the compensations that completed and runs
    the failed one again. Prints the execution id; with --json, the execution object. Exit 2
    unless the execution is compensation_failed.
    """
    actions.retry_rollback(Session(db, config, json, debug), execution, reason)


@app.command("stuck")
@command
def stuck(
    limit: Annotated[int, typer.Option(
        "--limit", "-n", metavar="N", help="At most N executions.")] = 100,
    db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List the executions that need an operator, the most recently changed first.

    Failed and compensation_failed executions, and active ones that wait for a workflow no
    worker has loaded (their reason says which). Printed as durablectl list prints: a table on
    a terminal, tab-separated lines under a header when piped, one execution object per line
    with --json.
    """
    actions.stuck(Session(db, config, json, debug), limit)
