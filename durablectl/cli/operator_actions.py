"""What the operator commands do: retry, fork, skip-step, force-fail, edit-state,
retry-rollback, stuck. Their options are declared in ``durablectl.cli.operator_cmds`` (typer);
the bodies live here, free of typer, as ``durablectl.cli.actions`` is for the execution
commands.

Built on ``DurableOperator`` with the OS user as the actor; the library checks the status and
records the action in the audit trail in the same transaction. A write commits, then nudges the
database's daemon so that it runs a resumed execution at once; without a running worker a
``note:`` says that it runs when one does. Nothing here creates a missing database: an action
on one is an unknown execution (exit 3), ``stuck`` prints nothing. Every action closes its
session.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durablectl.cli.core import Session, fail, note, read_json_argument
from durablectl.errors import ExecutionNotFound

if TYPE_CHECKING:
    from durablectl.client import DurableOperator


def _operator(session: Session, execution_id: str) -> DurableOperator:
    """The operator on this database; an unknown execution when the file does not exist."""
    from durablectl.client import DurableOperator

    if not os.path.exists(session.db_path):
        raise ExecutionNotFound(execution_id)
    return DurableOperator(session.store,
                           max_payload_bytes=session.config.limits.max_payload_bytes)


def _ready_to_nudge() -> None:
    """Import what ``Session.nudge`` needs before committing, so that the nudge follows the
    commit at once."""
    import durablectl.daemon.ipc
    import durablectl.daemon.paths  # noqa: F401


def _act(session: Session, execution_id: str, action: Callable[[DurableOperator], str], *,
         runs: bool) -> None:
    """Run one action, wake the daemon, and print the id it returns (``--json``: that
    execution's object); ``runs``: the action lets the execution run again."""
    from durablectl.cli import render
    from durablectl.model import to_json

    try:
        operator = _operator(session, execution_id)
        _ready_to_nudge()
        result_id = action(operator)
        session.nudge()
        if session.json:
            render.emit_json(to_json(session.store.get_execution(result_id)))
        else:
            print(result_id, flush=True)
        if runs and not session.store.live_workers():
            note(f"no daemon is running for {session.db_path}: execution {result_id} is "
                 "pending and runs when one does (durablectl daemon start)")
    finally:
        session.close()


def retry(session: Session, execution: str, reason: str | None) -> None:
    _act(session, execution, lambda op: op.retry(execution, reason=reason), runs=True)


def retry_rollback(session: Session, execution: str, reason: str | None) -> None:
    _act(session, execution, lambda op: op.retry_rollback(execution, reason=reason), runs=True)


def fork(session: Session, execution: str, step: str, reason: str | None) -> None:
    _act(session, execution, lambda op: op.fork(execution, step, reason=reason), runs=True)


def skip_step(session: Session, execution: str, step: str, value: str | None,
              reason: str | None) -> None:
    result: Any = read_json_argument(value, "--value")  # before the database is opened
    _act(session, execution, lambda op: op.skip_step(execution, step, result, reason=reason),
         runs=True)


def edit_state(session: Session, execution: str, step: str, value: str,
               reason: str | None) -> None:
    new_value: Any = read_json_argument(value, "--value")
    _act(session, execution,
         lambda op: op.edit_state(execution, step, new_value, reason=reason), runs=False)


def force_fail(session: Session, execution: str, reason: str | None) -> None:
    _act(session, execution, lambda op: op.force_fail(execution, reason), runs=False)


def stuck(session: Session, limit: int) -> None:
    from durablectl.cli import render
    from durablectl.client import DurableOperator

    try:
        if limit < 0:
            raise fail("--limit must be zero or more")
        found = []
        if os.path.exists(session.db_path):
            found = DurableOperator(session.store).list_stuck_executions(limit=limit)
        render.execution_list(session, found)
    finally:
        session.close()
