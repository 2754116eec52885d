"""The SQL of the operator's repairs (``DurableOperator``), mixed into :class:`SqliteStore`
(kept apart so each file stays readable).

Each action is one transaction: it reads the execution, refuses a status the action does not
accept (``model.OPERATOR_ACCEPTS``), changes history and status, and writes its
``operator_action`` audit entry, so that a change is never committed without its record.

Two rules keep the engine's view of the execution right:

- a step row that changes takes a new ``seq`` above the execution's ``step_seq`` (and so do
  the rows recorded after it, in the same order, so that seq order stays the order of the run,
  which ``fork`` copies by), and a row that goes is deleted: a worker's cached history
  (``durablectl.history``) loads the rows after the seq it has seen, and reloads everything
  when the step count disagrees;
- an execution made runnable is ``pending`` without a lease, so the next claim takes it (a
  daemon notices another process's commit through ``data_version`` within a second; the CLI
  nudges it too).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from durablectl.errors import ExecutionNotFound, ExecutionStateError, StepIdError
from durablectl.model import (
    ACTIVE_STATUSES,
    OPERATOR_ACCEPTS,
    UNLOADED_REASON,
    ErrorInfo,
    Execution,
)

if TYPE_CHECKING:
    from durablectl.store.sqlite import _Txn

_IDS_SHOWN = 20  # step ids an unknown-step error lists


class _Target(NamedTuple):
    """What an action needs to know of the execution it acts on."""

    status: str
    attempt: int
    max_attempts: int
    deadline: float | None


def _stored_value(kind: str, value_json: str, previous: str | None) -> str:
    """The row result that makes the replayed call of ``kind`` return ``value_json``: a signal
    wait stores ``{"kind": "signal", "payload": ...}`` and a switch keeps its branch; any other
    kind stores the value itself (a sleep, emit or note returns nothing on replay)."""
    if kind == "signal":
        return '{"kind":"signal","payload":' + value_json + "}"
    if kind == "switch":
        old = json.loads(previous) if previous is not None else None
        branch = old.get("branch") if isinstance(old, dict) else None
        return json.dumps({"branch": "operator" if branch is None else branch,
                           "result": json.loads(value_json)},
                          separators=(",", ":"), ensure_ascii=False)
    return value_json


class OperatorQueries:
    """Operator methods of the SQLite store (expects ``_write``, ``_read``, ``_add_audit`` and
    ``_status_change`` from it)."""

    _write: Callable[..., Any]
    _read: Callable[..., list[Any]]

    # reading -----------------------------------------------------------------------------
    def list_stuck_executions(self, *, limit: int = 100) -> list[Execution]:
        from durablectl.store.sqlite import _EXECUTION_COLUMNS, _execution  # imports us

        marks = ",".join(f"?{4 + i}" for i in range(len(ACTIVE_STATUSES)))
        # the newest failed ones come in order from their own index (named: the planner
        # would rather read every failure ever through the status index and sort them, which
        # the one OR-ed query did too); those queued for an unloaded workflow are among the
        # active few
        rows = self._read(
            f"SELECT * FROM (SELECT {_EXECUTION_COLUMNS} FROM executions"
            " INDEXED BY executions_failed WHERE status IN ('failed', 'compensation_failed')"
            " ORDER BY updated_at DESC, execution_id DESC LIMIT ?1)"
            f" UNION ALL SELECT * FROM (SELECT {_EXECUTION_COLUMNS} FROM executions"
            f" WHERE status IN ({marks}) AND substr(status_reason, 1, ?2) = ?3)"
            " ORDER BY updated_at DESC, execution_id DESC LIMIT ?1",
            (int(limit), len(UNLOADED_REASON), UNLOADED_REASON, *ACTIVE_STATUSES),
        )
        return [_execution(row) for row in rows]

    # helpers -----------------------------------------------------------------------------
    @staticmethod
    def _execution_after(conn: sqlite3.Connection, execution_id: str) -> Execution:
        from durablectl.store.sqlite import _EXECUTION_COLUMNS, _execution  # imports us

        row = conn.execute(f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?",
                           (execution_id,)).fetchone()
        return _execution(row)

    @staticmethod
    def _acting_on(conn: sqlite3.Connection, execution_id: str, action: str) -> _Target:
        row = conn.execute(
            "SELECT status, attempt, max_attempts, deadline FROM executions"
            " WHERE execution_id = ?", (execution_id,),
        ).fetchone()
        if row is None:
            raise ExecutionNotFound(execution_id)
        accepted = OPERATOR_ACCEPTS[action]
        if row[0] not in accepted:
            raise ExecutionStateError(execution_id, action, row[0], accepted)
        return _Target(row[0], int(row[1]), int(row[2]), row[3])

    @staticmethod
    def _unknown_step(conn: sqlite3.Connection, execution_id: str, step_id: str,
                      what: str = "step") -> StepIdError:
        ids = [row[0] for row in conn.execute(
            "SELECT step_id FROM steps WHERE execution_id = ? ORDER BY seq LIMIT ?",
            (execution_id, _IDS_SHOWN + 1))]
        if ids:
            listed = ", ".join(ids[:_IDS_SHOWN]) + (", ..." if len(ids) > _IDS_SHOWN else "")
            known = f"(its steps: {listed})"
        else:
            known = "(it has no stored steps)"
        return StepIdError(f"execution {execution_id} has no {what} {step_id!r} {known}")

    @staticmethod
    def _next_step_seqs(conn: sqlite3.Connection, execution_id: str, count: int = 1) -> int:
        """Take ``count`` new seqs, above every seq a cached history has seen; returns the
        first."""
        top = int(conn.execute(
            "UPDATE executions SET step_seq = step_seq + ? WHERE execution_id = ?"
            " RETURNING step_seq", (count, execution_id),
        ).fetchone()[0])
        return top - count + 1

    def _renumber_from(self, conn: sqlite3.Connection, execution_id: str,
                       step_id: str) -> int | None:
        """New seqs for a step that is about to change and for every step recorded after it,
        in the same order; returns the step's new seq (None: it has no row)."""
        row = conn.execute("SELECT seq FROM steps WHERE execution_id = ? AND step_id = ?",
                           (execution_id, step_id)).fetchone()
        if row is None:
            return None
        moved = [found[0] for found in conn.execute(
            "SELECT step_id FROM steps WHERE execution_id = ? AND seq >= ?"
            " ORDER BY seq, step_id != ?", (execution_id, row[0], step_id))]
        first = self._next_step_seqs(conn, execution_id, len(moved))
        conn.executemany(
            "UPDATE steps SET seq = ? WHERE execution_id = ? AND step_id = ?",
            [(first + number, execution_id, moved_id) for number, moved_id in enumerate(moved)],
        )
        return first

    def _record_action(self, conn: sqlite3.Connection, txn: _Txn, execution_id: str,
                       attempt: int, *, action: str, actor: str, reason: str | None,
                       step_id: str | None, now: float, **extra: Any) -> None:
        """The ``operator_action`` entry, always kept (even with audit persistence off)."""
        data = {"action": action, "actor": actor, "reason": reason, "step_id": step_id, **extra}
        self._add_audit(conn, txn, kind="operator_action",  # type: ignore[attr-defined]
                        execution_id=execution_id, attempt=attempt, data=data, now=now,
                        audit=True)

    def _resume(self, conn: sqlite3.Connection, txn: _Txn, execution_id: str, target: _Target,
                *, attempt: int, action: str, actor: str, reason: str | None,
                now: float) -> None:
        """Make the execution runnable: ``pending``, no lease, no result or error, so that the
        next claim takes it. A pending retry timer goes (the retry is now). A finished
        execution's time-out is armed again while it lies ahead and lifted once it has passed
        (the operator asked for this run); an active one keeps its own."""
        deadline = target.deadline
        finished = target.status not in ACTIVE_STATUSES
        if finished and deadline is not None and deadline <= now:
            deadline = None
        conn.execute(
            "UPDATE executions SET status = 'pending', status_reason = ?, attempt = ?,"
            " max_attempts = max(max_attempts, ?), result = NULL, error = NULL, deadline = ?,"
            " lease_owner = NULL, lease_until = NULL, wakeups = wakeups + 1, updated_at = ?"
            " WHERE execution_id = ?",
            (f"operator {action}", attempt, attempt, deadline, now, execution_id),
        )
        conn.execute(
            "UPDATE timers SET state = 'cancelled' WHERE execution_id = ? AND kind = 'retry'"
            " AND state = 'pending'", (execution_id,),
        )
        if finished:
            conn.execute(
                "UPDATE timers SET state = ? WHERE execution_id = ? AND kind = 'timeout'",
                ("pending" if deadline is not None else "cancelled", execution_id),
            )
        why = f"operator {action} by {actor}" + (f": {reason}" if reason else "")
        self._status_change(conn, txn, execution_id=execution_id,  # type: ignore[attr-defined]
                            attempt=attempt, old=target.status, new="pending", reason=why,
                            now=now, audit=True)

    # actions -----------------------------------------------------------------------------
    def retry_execution(self, execution_id: str, *, actor: str, reason: str | None,
                        now: float) -> Execution:
        """A failed execution runs again as a new attempt: stored results are replayed, failed
        steps run again."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            target = self._acting_on(conn, execution_id, "retry")
            attempt = target.attempt + 1
            self._record_action(conn, txn, execution_id, attempt, action="retry", actor=actor,
                                reason=reason, step_id=None, now=now)
            self._resume(conn, txn, execution_id, target, attempt=attempt, action="retry",
                         actor=actor, reason=reason, now=now)
            return self._execution_after(conn, execution_id)

        result: Execution = self._write(job)
        return result

    def retry_rollback(self, execution_id: str, *, actor: str, reason: str | None,
                       now: float) -> Execution:
        """The failed compensation's record goes and the execution resumes in the same
        attempt, so that replay takes the same path back to ``rollback()``: compensations
        that completed are skipped, the failed one runs again."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            target = self._acting_on(conn, execution_id, "retry-rollback")
            failed = [row[0] for row in conn.execute(
                "DELETE FROM steps WHERE execution_id = ? AND kind = 'rollback'"
                " AND error IS NOT NULL RETURNING step_id", (execution_id,))]
            failed.sort()
            extra = {"removed": failed} if len(failed) > 1 else {}
            self._record_action(conn, txn, execution_id, target.attempt,
                                action="retry-rollback", actor=actor, reason=reason,
                                step_id=failed[0] if failed else None, now=now, **extra)
            self._resume(conn, txn, execution_id, target, attempt=target.attempt,
                         action="retry-rollback", actor=actor, reason=reason, now=now)
            return self._execution_after(conn, execution_id)

        result: Execution = self._write(job)
        return result

    def _step_to_settle(self, conn: sqlite3.Connection, execution_id: str,
                        step_id: str) -> tuple[str, str | None, float | None]:
        """(kind, stored result, started_at) of a stored step, or of a sleep or signal wait the
        execution reached (a timer, no step yet)."""
        row = conn.execute(
            "SELECT kind, result, started_at FROM steps WHERE execution_id = ? AND step_id = ?",
            (execution_id, step_id),
        ).fetchone()
        if row is not None:
            return str(row[0]), row[1], row[2]
        timer = conn.execute(
            "SELECT kind, created_at FROM timers WHERE execution_id = ? AND step_id = ?"
            " AND kind IN ('sleep', 'signal') ORDER BY timer_id DESC LIMIT 1",
            (execution_id, step_id),
        ).fetchone()
        if timer is not None:
            return str(timer[0]), None, timer[1]
        raise self._unknown_step(conn, execution_id, step_id)

    def skip_step(self, execution_id: str, step_id: str, *, value_json: str, actor: str,
                  reason: str | None, now: float) -> Execution:
        """Settle a step (or a wait) with ``value_json`` and let the execution go on: a failed
        or retrying one as a new attempt, a compensation_failed one as ``retry_rollback``
        does, a parked one woken now."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            target = self._acting_on(conn, execution_id, "skip-step")
            kind, previous, started_at = self._step_to_settle(conn, execution_id, step_id)
            attempt = target.attempt + (1 if target.status in ("failed", "retrying") else 0)
            seq = self._renumber_from(conn, execution_id, step_id)
            if seq is None:  # a wait settled now: its record comes last
                seq = self._next_step_seqs(conn, execution_id)
            conn.execute(
                "INSERT INTO steps (execution_id, step_id, kind, seq, result, error, attempt,"
                " started_at, completed_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)"
                " ON CONFLICT (execution_id, step_id) DO UPDATE SET seq = excluded.seq,"
                " result = excluded.result, error = NULL, attempt = excluded.attempt,"
                " completed_at = excluded.completed_at",
                (execution_id, step_id, kind, seq, _stored_value(kind, value_json, previous),
                 attempt, now if started_at is None else started_at, now),
            )
            conn.execute(  # the wait it settles is over
                "UPDATE timers SET state = 'cancelled' WHERE execution_id = ? AND step_id = ?"
                " AND kind IN ('sleep', 'signal') AND state = 'pending'",
                (execution_id, step_id),
            )
            if target.status == "compensation_failed":  # as retry_rollback: run them again
                conn.execute("DELETE FROM steps WHERE execution_id = ? AND kind = 'rollback'"
                             " AND error IS NOT NULL", (execution_id,))
            self._record_action(conn, txn, execution_id, attempt, action="skip-step",
                                actor=actor, reason=reason, step_id=step_id, now=now,
                                value=json.loads(value_json))
            self._resume(conn, txn, execution_id, target, attempt=attempt, action="skip-step",
                         actor=actor, reason=reason, now=now)
            return self._execution_after(conn, execution_id)

        result: Execution = self._write(job)
        return result

    def edit_step_result(self, execution_id: str, step_id: str, *, value_json: str, actor: str,
                         reason: str | None, now: float) -> Execution:
        """Overwrite a stored step's result (a failed step's error goes with it); the status
        does not change, the next replay returns the new value."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            target = self._acting_on(conn, execution_id, "edit-state")
            row = conn.execute(
                "SELECT kind, result FROM steps WHERE execution_id = ? AND step_id = ?",
                (execution_id, step_id),
            ).fetchone()
            if row is None:
                raise self._unknown_step(conn, execution_id, step_id, "stored step")
            self._renumber_from(conn, execution_id, step_id)
            conn.execute(
                "UPDATE steps SET result = ?, error = NULL WHERE execution_id = ? AND step_id = ?",
                (_stored_value(row[0], value_json, row[1]), execution_id, step_id),
            )
            conn.execute("UPDATE executions SET updated_at = ? WHERE execution_id = ?",
                         (now, execution_id))
            self._record_action(conn, txn, execution_id, target.attempt, action="edit-state",
                                actor=actor, reason=reason, step_id=step_id, now=now,
                                value=json.loads(value_json),
                                previous=None if row[1] is None else json.loads(row[1]))
            return self._execution_after(conn, execution_id)

        result: Execution = self._write(job)
        return result

    def force_fail(self, execution_id: str, *, message: str, actor: str, reason: str | None,
                   now: float) -> Execution:
        """An active execution becomes ``failed`` with error ``ForceFailed``; its timers go and
        a run in progress is refused at its next write."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            target = self._acting_on(conn, execution_id, "force-fail")
            why = "force-failed" + (f": {reason}" if reason else "")
            error = ErrorInfo("ForceFailed", message)
            conn.execute(
                "UPDATE executions SET status = 'failed', status_reason = ?, error = ?,"
                " lease_owner = NULL, lease_until = NULL, wakeups = wakeups + 1,"
                " updated_at = ? WHERE execution_id = ?",
                (why, json.dumps(error.to_json()), now, execution_id),
            )
            conn.execute("UPDATE timers SET state = 'cancelled' WHERE execution_id = ?"
                         " AND state = 'pending'", (execution_id,))
            self._record_action(conn, txn, execution_id, target.attempt, action="force-fail",
                                actor=actor, reason=reason, step_id=None, now=now)
            self._status_change(conn, txn, execution_id=execution_id,  # type: ignore[attr-defined]
                                attempt=target.attempt, old=target.status, new="failed",
                                reason=f"{why} (by {actor})", now=now, audit=True)
            return self._execution_after(conn, execution_id)

        result: Execution = self._write(job)
        return result

    def fork_execution(self, execution_id: str, from_step: str, *, new_execution_id: str,
                       actor: str, reason: str | None, now: float) -> Execution:
        """A new pending execution of the same workflow and input whose history is a copy of
        the steps recorded before ``from_step`` (as its first attempt); it runs from there.
        The original is not touched beyond an audit entry."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> Execution:
            source = conn.execute(
                "SELECT workflow_id, status, attempt, max_attempts, retry_backoff, input,"
                " created_at, deadline FROM executions WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
            if source is None:
                raise ExecutionNotFound(execution_id)
            if source[1] not in OPERATOR_ACCEPTS["fork"]:  # pragma: no cover - every status
                raise ExecutionStateError(execution_id, "fork", source[1],
                                          OPERATOR_ACCEPTS["fork"])
            steps = conn.execute(
                "SELECT step_id, kind, result, error, started_at, completed_at FROM steps"
                " WHERE execution_id = ? ORDER BY seq", (execution_id,)).fetchall()
            cut = next((number for number, s in enumerate(steps) if s[0] == from_step), None)
            if cut is None:
                # a wait the execution reached but that has no result: all it recorded came
                # before it
                if conn.execute(
                    "SELECT 1 FROM timers WHERE execution_id = ? AND step_id = ?"
                    " AND kind IN ('sleep', 'signal') LIMIT 1", (execution_id, from_step),
                ).fetchone() is None:
                    raise self._unknown_step(conn, execution_id, from_step)
                cut = len(steps)
            copied = steps[:cut]
            deadline = None if source[7] is None else now + (source[7] - source[6])
            conn.execute(
                "INSERT INTO executions (execution_id, workflow_id, status, attempt,"
                " max_attempts, retry_backoff, input, created_at, updated_at, deadline,"
                " forked_from_execution, forked_from_step, step_seq)"
                " VALUES (?, ?, 'pending', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new_execution_id, source[0], source[3], source[4], source[5], now, now,
                 deadline, execution_id, from_step, len(copied)),
            )
            if deadline is not None:
                conn.execute(
                    "INSERT INTO timers (kind, execution_id, step_id, due_at, created_at)"
                    " VALUES ('timeout', ?, '', ?, ?)", (new_execution_id, deadline, now))
            conn.executemany(
                "INSERT INTO steps (execution_id, step_id, kind, seq, result, error, attempt,"
                " started_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                [(new_execution_id, s[0], s[1], number, s[2], s[3], s[4], s[5])
                 for number, s in enumerate(copied, start=1)],
            )
            self._record_action(conn, txn, execution_id, int(source[2]), action="fork",
                                actor=actor, reason=reason, step_id=from_step, now=now,
                                fork=new_execution_id)
            self._status_change(conn, txn, execution_id=new_execution_id,  # type: ignore[attr-defined]
                                attempt=1, old=None, new="pending",
                                reason=f"forked from {execution_id} at {from_step}", now=now,
                                audit=True)
            self._record_action(conn, txn, new_execution_id, 1, action="fork", actor=actor,
                                reason=reason, step_id=from_step, now=now,
                                forked_from=execution_id, copied=len(copied))
            for s in copied:  # the fork's timeline shows what it starts from
                data: dict[str, Any] = {"step_id": s[0], "internal": s[1] != "step",
                                        "copied_from": execution_id}
                if s[4] is not None and s[5] is not None:
                    data["duration_ms"] = round((s[5] - s[4]) * 1000.0, 3)
                if s[3] is not None:
                    data["error"] = str(json.loads(s[3]).get("type", "Error"))
                self._add_audit(conn, txn, kind="step_completed",  # type: ignore[attr-defined]
                                execution_id=new_execution_id, attempt=1, data=data, now=now,
                                audit=True)
            return self._execution_after(conn, new_execution_id)

        result: Execution = self._write(job)
        return result
