"""Append-only schema steps. Each step is applied in one transaction with its version record
(``PRAGMA user_version``), so a crash mid-migration leaves the previous version intact.

Never edit a step that has shipped: add a new one.
"""

from __future__ import annotations

# "DuRb" as a 32-bit integer: marks a SQLite file as ours (PRAGMA application_id).
APPLICATION_ID = 0x44755262

MIGRATIONS: list[list[str]] = [
    # 1: the first schema; DESIGN-NOTES §8 lists why each column is here from the start.
    [
        """CREATE TABLE executions (
            execution_id TEXT PRIMARY KEY,
            workflow_id TEXT NOT NULL,
            status TEXT NOT NULL,
            status_reason TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            max_attempts INTEGER NOT NULL,
            retry_backoff REAL NOT NULL DEFAULT 2.0,
            input TEXT,
            result TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            deadline REAL,
            idempotency_key TEXT,
            forked_from_execution TEXT,
            forked_from_step TEXT,
            lease_owner TEXT,
            lease_until REAL,
            wakeups INTEGER NOT NULL DEFAULT 0,
            step_seq INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX executions_idempotency ON executions(workflow_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX executions_status ON executions(status, created_at)",
        "CREATE INDEX executions_workflow ON executions(workflow_id, created_at)",
        "CREATE INDEX executions_created ON executions(created_at)",
        "CREATE INDEX executions_lease ON executions(lease_owner) WHERE lease_owner IS NOT NULL",
        "CREATE INDEX executions_ready ON executions(created_at)"
        " WHERE status IN ('pending', 'running')",
        """CREATE TABLE steps (
            execution_id TEXT NOT NULL REFERENCES executions(execution_id) ON DELETE CASCADE,
            step_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            seq INTEGER NOT NULL,
            result TEXT,
            error TEXT,
            attempt INTEGER NOT NULL,
            started_at REAL,
            completed_at REAL,
            PRIMARY KEY (execution_id, step_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX steps_seq ON steps(execution_id, seq)",
        """CREATE TABLE signals (
            execution_id TEXT NOT NULL REFERENCES executions(execution_id) ON DELETE CASCADE,
            signal_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            payload TEXT,
            created_at REAL NOT NULL,
            consumed_by TEXT,
            consumed_at REAL,
            PRIMARY KEY (execution_id, signal_id, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX signals_unconsumed ON signals(execution_id, signal_id, seq)"
        " WHERE consumed_by IS NULL",
        """CREATE TABLE timers (
            timer_id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            execution_id TEXT REFERENCES executions(execution_id) ON DELETE CASCADE,
            step_id TEXT,
            signal_id TEXT,
            schedule_id TEXT REFERENCES schedules(id) ON DELETE CASCADE,
            due_at REAL,
            state TEXT NOT NULL DEFAULT 'pending',
            created_at REAL NOT NULL
        )""",
        "CREATE UNIQUE INDEX timers_execution ON timers(execution_id, kind, step_id)",
        "CREATE INDEX timers_schedule ON timers(schedule_id)",
        "CREATE INDEX timers_due ON timers(due_at) WHERE state = 'pending' AND due_at IS NOT NULL",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            execution_id TEXT REFERENCES executions(execution_id) ON DELETE CASCADE,
            attempt INTEGER NOT NULL DEFAULT 0,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX audit_execution ON audit(execution_id, seq)",
        """CREATE TABLE workers (
            worker_id TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            hostname TEXT NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        )""",
        """CREATE TABLE workflows (
            workflow_id TEXT PRIMARY KEY,
            alias TEXT,
            max_attempts INTEGER,
            retry_backoff REAL,
            timeout REAL,
            recorded_by TEXT,
            recorded_at REAL NOT NULL
        )""",
        "CREATE INDEX workflows_alias ON workflows(alias)",
        """CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            workflow_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            cron TEXT,
            interval_seconds REAL,
            timezone TEXT,
            input TEXT,
            status TEXT NOT NULL,
            catch_up TEXT NOT NULL,
            overlap TEXT NOT NULL,
            anchor REAL,
            next_run REAL,
            last_run REAL,
            last_execution_id TEXT,
            paused_reason TEXT,
            declared INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE schedule_runs (
            schedule_id TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
            due_at REAL NOT NULL,
            outcome TEXT NOT NULL,
            execution_id TEXT,
            recorded_at REAL NOT NULL,
            missed_count INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (schedule_id, due_at)
        )""",
        "CREATE INDEX schedule_runs_execution ON schedule_runs(execution_id)",
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT
        )""",
    ],
    # 2: the pending timers of one execution by index. Ended timer rows stay (their times
    # feed the timeline), so a workflow that waits a thousand times has a thousand rows; the
    # checks a signal, a claim and a wake-up make ("is it waiting for this?") must not scan
    # them, or every wake-up costs O(history) (issue #7: a 1,000-signal loop slowed down).
    [
        "CREATE INDEX timers_pending ON timers(execution_id, kind, signal_id)"
        " WHERE state = 'pending'",
    ],
    # 3: work that grew with history (issue #7). A schedule keeps one run row per tick (a
    # minute's schedule: half a million a year), and the daemon asks "is any tick queued?"
    # after every execution that ends, on its loop, and in every firing's transaction: a scan
    # of all of them (25 ms at half a million rows) each time; queued rows are few, so they
    # get an index of their own. A schedule's fired and cancelled timer rows are no longer
    # kept (re-arming stepped over all of them); the ones kept so far go. Listing one
    # workflow's executions by status, and finding its queued ones, walked every execution
    # the workflow ever had: the workflow index now has the status between. `operator stuck`
    # sorted every failed execution ever to show the newest: they get an index of their own.
    [
        "CREATE INDEX schedule_runs_queued ON schedule_runs(schedule_id, due_at)"
        " WHERE outcome = 'queued'",
        "DELETE FROM timers WHERE schedule_id IS NOT NULL AND state != 'pending'",
        "CREATE INDEX executions_workflow_status ON executions(workflow_id, status, created_at)",
        "DROP INDEX executions_workflow",
        "CREATE INDEX executions_failed ON executions(updated_at)"
        " WHERE status IN ('failed', 'compensation_failed')",
    ],
]

LATEST_VERSION = len(MIGRATIONS)
