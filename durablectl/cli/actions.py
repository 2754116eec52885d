"""What the execution commands do: start, signal, status, show, list, wait, cancel, recover,
workflows. Their options are declared in ``durablectl.cli.executions`` (typer); the bodies live
here, free of typer, so that the fast path of the hot read commands (``durablectl.cli.fast``)
runs them without importing it.

Built on ``DurableClient`` and the store's read methods: nothing here imports asyncio, the engine
or watchfiles (DESIGN-NOTES §7). Writes (``start``, ``signal``, ``cancel``, ``recover``) commit,
then nudge the database's daemon so that it acts at once; without a running worker the work is
stored and a ``note:`` says that it waits for one. Every action closes its session.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Any

from durablectl.cli.core import Session, fail, note, parse_duration, read_json_argument
from durablectl.errors import ExecutionNotFound, WaitTimedOut

if TYPE_CHECKING:
    from durablectl.model import Execution

WAIT_POLL_SECONDS = 0.02  # wait re-reads the execution only when PRAGMA data_version moved


# -- helpers ----------------------------------------------------------------------------------
def _existing_store(session: Session) -> Any:
    """The store, or None when the database file does not exist yet: a read command must not
    create an empty database because of a typo in --db."""
    if not os.path.exists(session.db_path):
        return None
    return session.store


def _call_quietly(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The client warns (Python ``warnings``) when no worker runs; the CLI says it in one
    ``note:`` line of its own instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _ready_to_nudge() -> None:
    """Import what ``Session.nudge`` needs before committing, so that the nudge follows the
    commit at once (the daemon is then reached in about a millisecond, not after imports)."""
    import durablectl.daemon.ipc
    import durablectl.daemon.paths  # noqa: F401


def _no_worker(session: Session) -> bool:
    return not session.store.live_workers()


def _wait(session: Session, store: Any, execution_id: str,
          timeout: float | None) -> Execution:
    """Poll until the execution finishes; a live status line on a terminal."""
    from durablectl.cli import render
    from durablectl.clock import monotonic

    started = monotonic()
    seen = None
    execution: Execution | None = None
    with render.WaitDisplay(session, execution_id) as display:
        while True:
            version = store.data_version()  # read before the row: a commit after it shows
            if version != seen or execution is None:
                seen = version
                execution = store.get_execution(execution_id)
                if execution is None:
                    raise ExecutionNotFound(execution_id)
                if not execution.is_active:
                    return execution
                if display.enabled:  # said on the live line: a note could precede an error
                    display.workers = len(store.live_workers())
            elapsed = monotonic() - started
            display.update(execution, elapsed)
            if timeout is not None and elapsed >= timeout:
                raise WaitTimedOut(execution_id, timeout, execution.status)
            pause = WAIT_POLL_SECONDS
            if timeout is not None:
                pause = min(pause, max(0.0, timeout - elapsed))
            time.sleep(pause)


def _finish_wait(session: Session, execution: Execution) -> None:
    """Print the outcome, then exit 1 (one error line) when it failed or was cancelled."""
    from durablectl.cli import render
    from durablectl.client import outcome_of

    render.wait_outcome(session, execution)
    outcome_of(execution)  # raises ExecutionFailed / ExecutionCancelled: exit 1


def _statuses(text: str | None) -> list[str] | None:
    from durablectl.model import parse_statuses

    try:
        return parse_statuses(text, where=" for --status")
    except ValueError as exc:
        raise fail(str(exc)) from None


# -- the commands -----------------------------------------------------------------------------
def start(session: Session, workflow: str, input: str | None, idempotency_key: str | None,
          wait: bool) -> None:
    from durablectl.cli import render

    try:
        value = read_json_argument(input, "--input")  # before the database is opened
        client = session.client()
        _ready_to_nudge()
        execution_id = _call_quietly(client.start_execution, workflow, value,
                                     idempotency_key=idempotency_key)
        session.nudge()
        if not (wait and session.json):
            render.started(session, execution_id)
        if _no_worker(session):
            note(f"no daemon is running for {session.db_path}: execution {execution_id} is "
                 "queued and starts when one runs (durablectl daemon start)")
        elif not session.store.known_workflows():
            note(f"no worker has recorded its workflows yet: execution {execution_id} waits "
                 f"for one that runs {workflow!r}")
        if wait:
            _finish_wait(session, _wait(session, session.store, execution_id, None))
    finally:
        session.close()


def signal(session: Session, execution: str, signal: str, payload: str | None) -> None:
    from durablectl.cli import render

    try:
        value = read_json_argument(payload, "--payload")
        client = session.client()
        _ready_to_nudge()
        seq = _call_quietly(client.signal, execution, signal, value)
        session.nudge()
        if session.json:
            render.emit_json({"execution_id": execution, "signal": signal, "seq": seq})
        if _no_worker(session):
            note(f"no daemon is running for {session.db_path}: signal {signal} is stored for "
                 f"execution {execution} and is delivered when one runs")
    finally:
        session.close()


def status(session: Session, execution: str) -> None:
    from durablectl.cli import render

    try:
        store = _existing_store(session)
        found = None if store is None else store.get_execution(execution)
        if found is None:
            raise ExecutionNotFound(execution)
        render.execution_status(session, found)
    finally:
        session.close()


def show(session: Session, execution: str) -> None:
    from durablectl.cli import render
    from durablectl.client import DurableOperator

    try:
        store = _existing_store(session)
        if store is None:
            raise ExecutionNotFound(execution)
        render.execution_detail(session, DurableOperator(store).get_execution_detail(execution))
    finally:
        session.close()


def list_executions(session: Session, status: str | None, workflow: str | None, limit: int,
                    offset: int) -> None:
    from durablectl.cli import render

    try:
        statuses = _statuses(status)
        if limit < 0 or offset < 0:
            raise fail("--limit and --offset must be zero or more")
        store = _existing_store(session)
        found: list[Execution] = []
        if store is not None:
            workflow_id = workflow
            if workflow:
                known = store.known_workflows()
                if workflow not in known:  # an alias lists the executions of its id
                    workflow_id = next((wid for wid, alias in known.items()
                                        if alias == workflow), workflow)
            found = store.list_executions(status=statuses, workflow=workflow_id,
                                          limit=limit + 1, offset=offset)
        more = len(found) > limit
        render.execution_list(session, found[:limit])
        if more and not session.json:
            note(f"more executions: --offset {offset + limit}")
    finally:
        session.close()


def wait(session: Session, execution: str, timeout: str | None) -> None:
    try:
        limit = None if timeout is None else parse_duration(timeout)
        store = _existing_store(session)
        if store is None:
            raise ExecutionNotFound(execution)
        _finish_wait(session, _wait(session, store, execution, limit))
    finally:
        session.close()


def cancel(session: Session, execution: str, reason: str | None) -> None:
    from durablectl.cli import render
    from durablectl.model import to_json

    try:
        store = _existing_store(session)
        if store is None:
            raise ExecutionNotFound(execution)
        cancelled = session.client().cancel_execution(execution, reason)
        session.nudge()
        if session.json:
            render.emit_json(to_json(cancelled))
        else:
            print(f"cancelled {cancelled.execution_id}")
    finally:
        session.close()


def prune(session: Session, older_than: str, status: str | None, vacuum: bool) -> None:
    import os

    from durablectl.cli import render
    from durablectl.model import FINISHED_STATUSES

    age = parse_duration(older_than)
    statuses = _statuses(status) or list(FINISHED_STATUSES)
    unfinished = [s for s in statuses if s not in FINISHED_STATUSES]
    if unfinished:
        raise fail(f"--status takes finished statuses only, not {', '.join(unfinished)}")
    try:
        path = session.db_path
        before = os.path.getsize(path) if os.path.exists(path) else 0
        now = session.client().clock.timestamp()
        deleted = session.store.prune_executions(older_than=now - age, statuses=statuses)
        if vacuum:
            session.store.vacuum()
        after = os.path.getsize(path) if os.path.exists(path) else 0
        if session.json:
            render.emit_json({"deleted": deleted, "size_before": before, "size_after": after,
                              "vacuumed": vacuum})
        else:
            print(f"deleted {deleted} execution{'' if deleted == 1 else 's'}"
                  + (f"; file {before} -> {after} bytes" if vacuum else ""))
    finally:
        session.close()


def recover(session: Session) -> None:
    from durablectl.cli import render

    try:
        count = session.client().recover()
        session.nudge()
        if session.json:
            render.emit_json({"recovered": count})
        else:
            print(f"recovered {count} execution{'' if count == 1 else 's'}")
        if count and _no_worker(session):
            note(f"no daemon is running for {session.db_path}: the recovered executions run "
                 "when one does")
    finally:
        session.close()


def workflows(session: Session) -> None:
    from durablectl.cli import render

    try:
        store = _existing_store(session)
        rows: list[dict[str, Any]] = []
        if store is not None:
            known = store.known_workflows()
            counts = store.count_in_flight()
            for workflow_id in sorted(set(known) | set(counts)):
                rows.append({"workflow_id": workflow_id, "alias": known.get(workflow_id),
                             "in_flight": counts.get(workflow_id, 0)})
        render.workflow_list(session, rows)
    finally:
        session.close()
