"""The SQL of schedules, mixed into :class:`SqliteStore` (kept apart so each file stays
readable). The arithmetic (which ticks are due, what is next) is not here: the service passes
it in as a ``plan`` function, so the store only records what was decided, atomically.

A tick is exactly-once: the transaction that fires a schedule marks its timer fired (only one
worker can), inserts one ``schedule_runs`` row per tick (primary key: schedule and due time),
creates the execution and arms the next timer, all in one commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from durablectl.clock import to_datetime
from durablectl.errors import InvalidSchedule, ScheduleNotFound
from durablectl.model import ACTIVE_STATUSES, Schedule, ScheduleRun
from durablectl.store.base import ScheduleDefinition, SchedulePlan

if TYPE_CHECKING:
    from durablectl.store.sqlite import _Txn

_SCHEDULE_COLUMNS = (
    "s.id, s.workflow_id, s.kind, s.cron, s.interval_seconds, s.timezone, s.input, s.status,"
    " s.catch_up, s.overlap, s.next_run, s.last_run, s.last_execution_id,"
    " (SELECT e.status FROM executions e WHERE e.execution_id = s.last_execution_id),"
    " s.paused_reason, s.declared"
)
_DEFINITION_FIELDS = ("workflow_id", "kind", "cron", "interval_seconds", "timezone", "input",
                      "catch_up", "overlap")


def _schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        id=row[0], workflow_id=row[1], kind=row[2], cron=row[3], interval_seconds=row[4],
        timezone=row[5], input=None if row[6] is None else json.loads(row[6]), status=row[7],
        catch_up=row[8], overlap=row[9], next_run=to_datetime(row[10]),
        last_run=to_datetime(row[11]), last_execution_id=row[12],
        last_execution_status=row[13], paused_reason=row[14], declared=bool(row[15]),
    )


class ScheduleQueries:
    """Schedule methods of the SQLite store (expects ``_write``, ``_read``, ``_add_audit``)."""

    _write: Callable[..., Any]
    _read: Callable[..., list[Any]]

    # reading -----------------------------------------------------------------------------
    def _schedule_row(self, conn: sqlite3.Connection, schedule_id: str) -> Any:
        return conn.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules s WHERE s.id = ?",
                            (schedule_id,)).fetchone()

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = self._read(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules s WHERE s.id = ?",
                          (schedule_id,))
        return _schedule(rows[0]) if rows else None

    def list_schedules(self) -> list[Schedule]:
        rows = self._read(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules s ORDER BY s.id")
        return [_schedule(row) for row in rows]

    def list_schedule_runs(self, schedule_id: str, *, limit: int = 100) -> list[ScheduleRun]:
        rows = self._read(
            "SELECT schedule_id, due_at, outcome, execution_id, recorded_at, missed_count"
            " FROM schedule_runs WHERE schedule_id = ? ORDER BY due_at DESC LIMIT ?",
            (schedule_id, int(limit)))
        return [ScheduleRun(schedule_id=r[0], due_at=to_datetime(r[1]),  # type: ignore[arg-type]
                            outcome=r[2], execution_id=r[3],
                            recorded_at=to_datetime(r[4]),  # type: ignore[arg-type]
                            missed_count=int(r[5])) for r in rows]

    # writing -----------------------------------------------------------------------------
    @staticmethod
    def _arm(conn: sqlite3.Connection, schedule_id: str, due_at: float | None,
             now: float) -> None:
        """Replace the schedule's timer with one at ``due_at`` (None: none). The old row goes
        rather than staying behind as fired or cancelled: nothing reads it again (the ticks
        are in ``schedule_runs``), and a minute's schedule would leave half a million rows a
        year for every later re-arm to step over."""
        conn.execute("DELETE FROM timers WHERE schedule_id = ?", (schedule_id,))
        if due_at is not None:
            conn.execute("INSERT INTO timers (kind, schedule_id, step_id, due_at, created_at)"
                         " VALUES ('schedule', ?, '', ?, ?)", (schedule_id, due_at, now))

    def ensure_schedule(self, definition: ScheduleDefinition, *, next_run: float | None,
                        now: float, resume_undeclared: bool = False) -> tuple[Schedule, bool]:
        """Create the schedule, or update it when its definition differs (re-arming it at
        ``next_run``); the same definition changes nothing, not even the next run. Never
        changes status, except that ``resume_undeclared`` resumes a schedule paused because
        its declaration had disappeared."""
        d = definition
        values = (d.workflow_id, d.kind, d.cron, d.interval_seconds, d.timezone, d.input_json,
                  d.catch_up, d.overlap)

        def job(conn: sqlite3.Connection, txn: _Txn) -> tuple[Schedule, bool]:
            found = conn.execute(
                f"SELECT {', '.join(_DEFINITION_FIELDS)}, status, paused_reason, declared"
                " FROM schedules WHERE id = ?", (d.id,)).fetchone()
            if found is None:
                conn.execute(
                    "INSERT INTO schedules (id, workflow_id, kind, cron, interval_seconds,"
                    " timezone, input, status, catch_up, overlap, anchor, next_run, declared,"
                    " created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?)",
                    (d.id, *values[:6], d.catch_up, d.overlap, now, next_run, int(d.declared),
                     now, now))
                self._arm(conn, d.id, next_run, now)
                return _schedule(self._schedule_row(conn, d.id)), True
            if found[0] != d.workflow_id:
                raise InvalidSchedule(
                    f"schedule {d.id!r} belongs to workflow {found[0]!r}, not {d.workflow_id!r}")
            status, paused_reason = found[8], found[9]
            changed = tuple(found[:8]) != values or bool(found[10]) != d.declared
            resume = resume_undeclared and status == "paused" and paused_reason == "undeclared"
            if not changed and not resume:
                return _schedule(self._schedule_row(conn, d.id)), False
            interval_changed = found[1] != d.kind or found[3] != d.interval_seconds
            conn.execute(
                "UPDATE schedules SET kind = ?, cron = ?, interval_seconds = ?, timezone = ?,"
                " input = ?, catch_up = ?, overlap = ?, declared = ?, updated_at = ?,"
                " anchor = CASE WHEN ? THEN ? ELSE anchor END WHERE id = ?",
                (d.kind, d.cron, d.interval_seconds, d.timezone, d.input_json, d.catch_up,
                 d.overlap, int(d.declared), now, int(interval_changed), now, d.id))
            if resume:
                status = "active"
                conn.execute("UPDATE schedules SET status = 'active', paused_reason = NULL"
                             " WHERE id = ?", (d.id,))
            if status == "active":
                conn.execute("UPDATE schedules SET next_run = ? WHERE id = ?", (next_run, d.id))
                self._arm(conn, d.id, next_run, now)
            return _schedule(self._schedule_row(conn, d.id)), True

        result: tuple[Schedule, bool] = self._write(job)
        return result

    def pause_schedule(self, schedule_id: str, *, reason: str, now: float) -> Schedule:
        def job(conn: sqlite3.Connection, txn: _Txn) -> Schedule:
            cur = conn.execute(
                "UPDATE schedules SET status = 'paused', paused_reason = ?, updated_at = ?"
                " WHERE id = ? AND status != 'done'", (reason, now, schedule_id))
            if cur.rowcount == 0:
                self._missing_or_done(conn, schedule_id, "pause")
            self._arm(conn, schedule_id, None, now)
            return _schedule(self._schedule_row(conn, schedule_id))

        result: Schedule = self._write(job)
        return result

    def resume_schedule(self, schedule_id: str, *, next_run: float | None, now: float,
                        only_reason: str | None = None) -> Schedule:
        def job(conn: sqlite3.Connection, txn: _Txn) -> Schedule:
            row = conn.execute("SELECT status, paused_reason FROM schedules WHERE id = ?",
                               (schedule_id,)).fetchone()
            if row is None or row[0] == "done":
                self._missing_or_done(conn, schedule_id, "resume")
            if row[0] == "paused" and (only_reason is None or row[1] == only_reason):
                conn.execute(
                    "UPDATE schedules SET status = 'active', paused_reason = NULL,"
                    " next_run = ?, updated_at = ? WHERE id = ?", (next_run, now, schedule_id))
                self._arm(conn, schedule_id, next_run, now)
            return _schedule(self._schedule_row(conn, schedule_id))

        result: Schedule = self._write(job)
        return result

    @staticmethod
    def _missing_or_done(conn: sqlite3.Connection, schedule_id: str, action: str) -> None:
        if conn.execute("SELECT 1 FROM schedules WHERE id = ?", (schedule_id,)).fetchone():
            raise InvalidSchedule(f"cannot {action} schedule {schedule_id!r}: it is done")
        raise ScheduleNotFound(schedule_id)

    def remove_schedule(self, schedule_id: str) -> None:
        def job(conn: sqlite3.Connection, txn: _Txn) -> None:
            # its timers and run history go with it (ON DELETE CASCADE)
            if conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 0:
                raise ScheduleNotFound(schedule_id)

        self._write(job)

    def fire_schedules(
        self, *, now: float, limit: int, plan: Callable[[Schedule, float], SchedulePlan],
        new_execution: Callable[[Schedule, float], dict[str, Any]], audit: bool = True,
    ) -> list[str]:
        """Fire due schedule timers; returns the ids of the executions created."""

        def job(conn: sqlite3.Connection, txn: _Txn) -> list[str]:
            due = conn.execute(
                "UPDATE timers SET state = 'fired' WHERE timer_id IN ("
                " SELECT timer_id FROM timers WHERE state = 'pending' AND kind = 'schedule'"
                " AND due_at <= ? ORDER BY due_at LIMIT ?) RETURNING schedule_id, due_at",
                (now, limit)).fetchall()
            started: list[str] = []
            for schedule_id, due_at in sorted(due, key=lambda r: r[1]):
                row = self._schedule_row(conn, schedule_id)
                if row is None or row[7] != "active":
                    continue
                schedule = _schedule(row)
                decided = plan(schedule, due_at)
                if decided.missed is not None:
                    count, last = decided.missed
                    conn.execute(
                        "INSERT OR IGNORE INTO schedule_runs (schedule_id, due_at, outcome,"
                        " recorded_at, missed_count) VALUES (?, ?, 'missed', ?, ?)",
                        (schedule_id, last, now, count))
                for tick in decided.run:
                    execution_id = self._run_tick(conn, txn, schedule, tick, now,
                                                  new_execution, audit)
                    if execution_id is not None:
                        started.append(execution_id)
                        schedule = _schedule(self._schedule_row(conn, schedule_id))
                status = "done" if decided.next_due is None else "active"
                conn.execute("UPDATE schedules SET next_run = ?, status = ?, updated_at = ?"
                             " WHERE id = ?", (decided.next_due, status, now, schedule_id))
                self._arm(conn, schedule_id, decided.next_due, now)
            started.extend(self._start_queued(conn, txn, now, new_execution, audit))
            return started

        result: list[str] = self._write(job)
        return result

    def _run_tick(self, conn: sqlite3.Connection, txn: _Txn, schedule: Schedule, tick: float,
                  now: float, new_execution: Callable[[Schedule, float], dict[str, Any]],
                  audit: bool) -> str | None:
        """One tick: started, skipped or queued by the overlap policy; never twice."""
        if conn.execute("SELECT 1 FROM schedule_runs WHERE schedule_id = ? AND due_at = ?",
                        (schedule.id, tick)).fetchone():
            return None  # this tick was already handled (a crash or a race)
        previous_active = schedule.last_execution_status in ACTIVE_STATUSES
        if previous_active and schedule.overlap == "skip":
            self._record_run(conn, schedule.id, tick, "skipped", None, now)
            return None
        if previous_active and schedule.overlap == "queue":
            queued = conn.execute("SELECT 1 FROM schedule_runs WHERE schedule_id = ?"
                                  " AND outcome = 'queued'", (schedule.id,)).fetchone()
            self._record_run(conn, schedule.id, tick, "skipped" if queued else "queued", None,
                             now)
            return None
        return self._start_run(conn, txn, schedule, tick, now, new_execution, audit)

    def _start_run(self, conn: sqlite3.Connection, txn: _Txn, schedule: Schedule, tick: float,
                   now: float, new_execution: Callable[[Schedule, float], dict[str, Any]],
                   audit: bool) -> str:
        arguments = new_execution(schedule, tick)
        execution_id: str = arguments["execution_id"]
        conn.execute(
            "INSERT INTO executions (execution_id, workflow_id, status, attempt, max_attempts,"
            " retry_backoff, input, created_at, updated_at, deadline)"
            " VALUES (?, ?, 'pending', 1, ?, ?, ?, ?, ?, ?)",
            (execution_id, schedule.workflow_id, arguments["max_attempts"],
             arguments["retry_backoff"], arguments["input_json"], now, now,
             arguments.get("deadline")))
        if arguments.get("deadline") is not None:
            conn.execute("INSERT INTO timers (kind, execution_id, step_id, due_at, created_at)"
                         " VALUES ('timeout', ?, '', ?, ?)",
                         (execution_id, arguments["deadline"], now))
        self._status_change(conn, txn, execution_id=execution_id,  # type: ignore[attr-defined]
                            attempt=1, old=None, new="pending",
                            reason=f"schedule {schedule.id}", now=now, audit=audit)
        conn.execute("INSERT OR REPLACE INTO schedule_runs (schedule_id, due_at, outcome,"
                     " execution_id, recorded_at) VALUES (?, ?, 'started', ?, ?)",
                     (schedule.id, tick, execution_id, now))
        conn.execute("UPDATE schedules SET last_run = ?, last_execution_id = ? WHERE id = ?",
                     (tick, execution_id, schedule.id))
        return execution_id

    @staticmethod
    def _record_run(conn: sqlite3.Connection, schedule_id: str, tick: float, outcome: str,
                    execution_id: str | None, now: float) -> None:
        conn.execute("INSERT OR IGNORE INTO schedule_runs (schedule_id, due_at, outcome,"
                     " execution_id, recorded_at) VALUES (?, ?, ?, ?, ?)",
                     (schedule_id, tick, outcome, execution_id, now))

    def _start_queued(self, conn: sqlite3.Connection, txn: _Txn, now: float,
                      new_execution: Callable[[Schedule, float], dict[str, Any]],
                      audit: bool) -> list[str]:
        """A queued tick starts once the schedule's previous execution has finished."""
        rows = conn.execute(
            "SELECT r.schedule_id, r.due_at FROM schedule_runs r JOIN schedules s"
            " ON s.id = r.schedule_id WHERE r.outcome = 'queued' AND NOT EXISTS ("
            " SELECT 1 FROM executions e WHERE e.execution_id = s.last_execution_id"
            " AND e.status IN ('pending', 'running', 'sleeping', 'waiting', 'retrying'))"
        ).fetchall()
        started: list[str] = []
        for schedule_id, tick in rows:
            schedule = _schedule(self._schedule_row(conn, schedule_id))
            started.append(self._start_run(conn, txn, schedule, tick, now, new_execution,
                                           audit))
        return started

    def has_queued_schedule_runs(self) -> bool:
        return bool(self._read("SELECT 1 FROM schedule_runs WHERE outcome = 'queued' LIMIT 1"))
