"""Fault injection (SPEC §3 errors, §8 guarantees): SQLite made to fail under a running engine.

Each fault is injected for real — another process holding the write lock past
``busy_timeout``, ``PRAGMA max_page_count`` standing in for a full disk, a read-only file or
folder, the file deleted or replaced under a daemon, corrupt bytes, a newer schema — and each test
checks the same three things: the error is one clear ``StorageError`` / ``IncompatibleDatabase``
(exit 6, one ``error:`` line from the CLI), nothing is half-written (every committed step row has
its result; a step body whose result was not committed ran again, never one that was), and once
the fault is gone the work resumes and completes (lost: 0).

Waits are on conditions; the whole file runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durablectl import DurableService, SqliteStore, workflow
from durablectl.errors import IncompatibleDatabase, StorageError
from durablectl.store.migrations import LATEST_VERSION

from .conftest import run, until
from .test_daemon import BASIC, DURABLECTL, DaemonHarness, daemon, pid_alive, wait_until

__all__ = ["daemon"]  # the fixture, re-used

BUSY_MS = 200

# -- workflows: one line per real run of a step body ------------------------------------------
RUNS: Counter[tuple[str, str]] = Counter()
GATE = threading.Event()  # step "a" of faults.gated returns only once it is set


@workflow("faults.gated")
async def gated(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    eid = ctx.execution_id

    def a() -> str:
        RUNS[(eid, "a")] += 1
        GATE.wait(10)
        return "a"

    first = await ctx.step("a", a)

    def b() -> str:
        RUNS[(eid, "b")] += 1
        return "b"

    second = await ctx.step("b", b)
    return {"n": data["n"], "steps": [first, second]}


@workflow("faults.big")
async def big(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    eid = ctx.execution_id
    sizes = []
    for index in range(3):
        def body(index: int = index) -> str:
            RUNS[(eid, f"s{index}")] += 1
            return f"{index}" * data["size"]

        sizes.append(len(await ctx.step(f"s{index}", body)))
    return {"sizes": sizes}


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    RUNS.clear()
    GATE.clear()
    yield
    GATE.set()  # never leave a worker thread blocked


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def step_rows(store: SqliteStore, execution_id: str) -> dict[str, Any]:
    return {step.step_id: step.result for step in store.list_step_results(execution_id)}


def assert_whole(store: SqliteStore, execution_ids: list[str], step_ids: list[str]) -> None:
    """Every execution completed, every step stored once with its result, every stored step's
    body ran at least once: nothing lost, nothing half-written."""
    for execution_id in execution_ids:
        execution = store.get_execution(execution_id)
        assert execution is not None and execution.status == "completed", execution
        rows = step_rows(store, execution_id)
        assert sorted(rows) == sorted(step_ids)
        assert all(rows[s] is not None for s in step_ids)
        assert all(RUNS[(execution_id, s)] >= 1 for s in step_ids)


# -- a lock held by another process -------------------------------------------------------------
class LockHolder:
    """A separate process holding ``BEGIN IMMEDIATE`` on the file until told to let go."""

    SCRIPT = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "conn.execute('ROLLBACK')\n"
        "conn.close()\n"
    )

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self.proc.poll() is None:  # pragma: no cover - only if release failed
            self.proc.kill()


def cli(db: Path, *args: str, config: Path | None = None,
        drop_caps: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLECTL_")}
    command = [str(DURABLECTL), *args, "--db", str(db)]
    if config is not None:
        command += ["--config", str(config)]
    if drop_caps:
        command = [*WITHOUT_DAC, *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, cwd=db.parent)


def one_error_line(done: subprocess.CompletedProcess[str], *words: str,
                   logged: bool = False) -> str:
    """``logged``: a foreground daemon also logs to stderr; only its ``error:`` lines count."""
    lines = [line for line in done.stderr.splitlines() if line.strip()
             and (not logged or line.startswith("error"))]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_lock_held_past_busy_timeout_fails_writes_clearly_and_work_resumes(
        db_path: Path) -> None:
    """Steps that ran while another process held the lock could not commit: the run aborts,
    the execution is released and re-runs those steps (at-least-once) after the lock is gone."""
    count = 4
    store = SqliteStore(db_path, busy_timeout_ms=BUSY_MS)

    async def main() -> list[str]:
        async with DurableService(store, [gated, big], lease_seconds=3) as service:
            ids = [await service.start_execution(gated, {"n": n}) for n in range(count)]
            await until(lambda: all(RUNS[(i, "a")] == 1 for i in ids))
            with LockHolder(db_path):
                GATE.set()  # the step bodies return; their results cannot be committed
                with pytest.raises(StorageError, match="locked by another process") as caught:
                    await service.start_execution(gated, {"n": 99})
                assert str(db_path) in str(caught.value)
                # every run aborts (its step result could not be committed) while it is held
                await until(lambda: not service.runner.running, timeout=10)
            results = [await service.wait(i, timeout=10) for i in ids]
            assert results == [{"n": n, "steps": ["a", "b"]} for n in range(count)]
            return ids

    try:
        ids = run(main())
        assert_whole(store, ids, ["a", "b"])
        # the start refused under the lock stored nothing
        assert len(store.list_executions()) == count
        # "a" ran more than once only because its first result never reached the database
        assert [(RUNS[(i, "a")], RUNS[(i, "b")]) for i in ids] == [(2, 1)] * count
    finally:
        store.close()


def test_the_cli_under_a_held_lock_prints_one_line_exits_6_and_stores_nothing(
        tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    config = tmp_path / "durablectl.toml"
    config.write_text(f"[sqlite]\nbusy_timeout_ms = {BUSY_MS}\n")
    SqliteStore(db).close()
    with LockHolder(db):
        done = cli(db, "start", "faults.gated", "--input", '{"n": 1}', config=config)
    assert done.returncode == 6, (done.stdout, done.stderr)
    one_error_line(done, "locked", str(db))
    assert done.stdout == ""
    with SqliteStore(db) as store:
        assert store.list_executions() == []


# -- a full disk --------------------------------------------------------------------------------
def test_a_full_disk_fails_the_write_clearly_and_work_resumes_once_there_is_room(
        db_path: Path) -> None:
    count, size = 3, 20_000
    store = SqliteStore(db_path)

    async def main() -> list[str]:
        async with DurableService(store, [gated, big], lease_seconds=3) as service:
            ids = [await service.start_execution(big, {"size": size}) for _ in range(count)]
            # no room for a single new page: the next step result cannot be committed
            pages = store.pragma("page_count")
            store.pragma(f"max_page_count = {pages}")
            with pytest.raises(StorageError, match="full") as caught:
                await service.start_execution(big, {"size": size, "pad": "x" * size})
            assert str(db_path) in str(caught.value)
            # every run aborts on a step result that finds no room
            await until(lambda: all(RUNS[(i, "s0")] >= 1 for i in ids)
                        and not service.runner.running, timeout=10)
            # nothing that needed a page reached the database, nothing half
            for execution_id in ids:
                rows = step_rows(store, execution_id)
                assert len(rows) < 3 and all(value is not None for value in rows.values())
            store.pragma("max_page_count = 1073741823")
            results = [await service.wait(i, timeout=10) for i in ids]
            assert results == [{"sizes": [size] * 3}] * count
            return ids

    try:
        ids = run(main())
        assert_whole(store, ids, ["s0", "s1", "s2"])
        assert len(store.list_executions()) == count  # the refused start stored nothing
        # the bodies whose results found no room ran again: at least once per execution
        assert sum(RUNS.values()) >= 3 * count + count
    finally:
        store.close()


def test_a_full_disk_names_itself_in_grouped_and_inline_writes(store: SqliteStore) -> None:
    """SQLite rolls the whole transaction back on SQLITE_FULL; the store used to issue its own
    ROLLBACK after that and report "cannot rollback - no transaction is active" instead."""
    store.pragma(f"max_page_count = {store.pragma('page_count')}")

    futures = [store.submit(store.create_execution, **create(f"ex-{n}", 20_000 if n == 1 else 10))
               for n in range(3)]
    for future in futures:
        with pytest.raises(StorageError, match="is full: database or disk is full"):
            future.result(timeout=10)
    with pytest.raises(StorageError, match="is full: database or disk is full"):
        store.create_execution(**create("ex-inline", 20_000))
    assert store.list_executions() == []  # nothing half
    store.pragma("max_page_count = 1073741823")
    store.create_execution(**create("ex-inline", 20_000))
    assert [e.execution_id for e in store.list_executions()] == ["ex-inline"]


def create(execution_id: str, size: int) -> dict[str, Any]:
    """The keywords of ``create_execution`` for an input of about ``size`` bytes."""
    return {"execution_id": execution_id, "workflow_id": "faults.big",
            "input_json": '"' + "x" * size + '"', "max_attempts": 1, "retry_backoff": 1.0,
            "now": 1_900_000_000.0}


# -- read-only file or folder ---------------------------------------------------------------
# Root reads and writes through any mode bits; the CLI then runs without CAP_DAC_OVERRIDE so
# that a 0400 file or a 0500 folder is read-only to it as to anyone else.
WITHOUT_DAC: list[str] = []
if os.geteuid() == 0:
    WITHOUT_DAC = ["setpriv", "--inh-caps=-all",
                   "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
needs_setpriv = pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                                   reason="root ignores mode bits and setpriv is missing")


def _seeded(db: Path) -> str:
    with SqliteStore(db) as store:
        store.create_execution(execution_id="ex-ro", workflow_id="faults.gated",
                               input_json='{"n": 1}', max_attempts=1, retry_backoff=1.0,
                               now=1_900_000_000.0)
    assert not Path(f"{db}-wal").exists()  # a clean close: no companions left
    return "ex-ro"


def _reads(db: Path, execution_id: str) -> None:
    status = cli(db, "status", execution_id, drop_caps=True)
    assert status.returncode == 0 and "pending" in status.stdout, status.stderr
    listed = cli(db, "list", drop_caps=True)
    assert listed.returncode == 0 and execution_id in listed.stdout, listed.stderr


def _write_refused(db: Path) -> None:
    started = cli(db, "start", "faults.gated", drop_caps=True)
    assert started.returncode == 6, (started.stdout, started.stderr)
    one_error_line(started, str(db), "is read-only")
    assert started.stdout == ""


@needs_setpriv
def test_a_read_only_file_refuses_writes_in_one_line_reads_work_and_it_recovers(
        tmp_path: Path) -> None:
    """WAL mode reads a 0400 file as long as its folder lets SQLite create the -wal and -shm
    (which it does, with the file's mode). Restoring the file's mode is enough to write again:
    the store gives those 0400 companions the file's mode back (it used to keep failing)."""
    db = tmp_path / "durable.db"
    execution_id = _seeded(db)
    before = digest(db)
    db.chmod(0o400)
    try:
        _write_refused(db)
        _reads(db, execution_id)
        _write_refused(db)  # after a read left its companions behind, too
        assert digest(db) == before
    finally:
        db.chmod(0o600)
    started = cli(db, "start", "faults.gated", drop_caps=True)
    assert started.returncode == 0, started.stderr
    with SqliteStore(db) as store:
        assert len(store.list_executions()) == 2


@needs_setpriv
def test_a_read_only_folder_refuses_opening_in_one_line_and_recovers(tmp_path: Path) -> None:
    """Without its -shm (a cleanly closed file), a WAL database in a read-only folder cannot be
    opened at all, not even to read: SQLite must create the -shm first. The error says read-only
    (it used to say "not a durablectl database")."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "durable.db"
    execution_id = _seeded(db)
    before = digest(db)
    folder.chmod(0o500)
    try:
        _write_refused(db)
        status = cli(db, "status", execution_id, drop_caps=True)
        assert status.returncode == 6, (status.stdout, status.stderr)
        one_error_line(status, str(db), "is read-only")
        assert digest(db) == before
        assert sorted(p.name for p in folder.iterdir()) == ["durable.db"]
    finally:
        folder.chmod(0o700)
    assert cli(db, "start", "faults.gated", drop_caps=True).returncode == 0


@needs_setpriv
def test_a_read_only_folder_with_live_companions_still_works(tmp_path: Path) -> None:
    """While another process has the database open (its -wal and -shm exist), a read-only
    folder takes nothing away: SQLite needs to create no file, so reads and writes work."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "durable.db"
    execution_id = _seeded(db)
    with SqliteStore(db) as holder:
        holder.get_execution(execution_id)  # a reader: the -wal and -shm exist
        folder.chmod(0o500)
        try:
            _reads(db, execution_id)
            started = cli(db, "start", "faults.gated", drop_caps=True)
            assert started.returncode == 0, started.stderr
        finally:
            folder.chmod(0o700)
        assert len(holder.list_executions()) == 2


# -- corrupt files --------------------------------------------------------------------------
def _valid_db(path: Path, executions: int = 50) -> None:
    with SqliteStore(path) as store:
        for n in range(executions):
            store.create_execution(execution_id=f"ex-{n}", workflow_id="faults.gated",
                                   input_json='{"pad": "' + "x" * 2000 + '"}', max_attempts=1,
                                   retry_backoff=1.0, now=1_900_000_000.0)
    assert not Path(f"{path}-wal").exists()  # checkpointed into the main file on close


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def _truncated(path: Path) -> None:
    _valid_db(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _page_overwritten(path: Path) -> None:
    _valid_db(path)
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(path, "r+b") as handle:
        handle.seek(page_size * (pages // 2))
        handle.write(os.urandom(page_size))


def _header_overwritten(path: Path) -> None:
    _valid_db(path)
    with open(path, "r+b") as handle:
        handle.seek(0)
        handle.write(os.urandom(100))


@pytest.mark.parametrize("damage", [_random_bytes, _truncated, _page_overwritten,
                                    _header_overwritten])
def test_a_corrupt_file_is_refused_clearly_and_left_unchanged(tmp_path: Path,
                                                              damage: Any) -> None:
    db = tmp_path / "durable.db"
    damage(db)
    before = digest(db)
    names = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises((IncompatibleDatabase, StorageError)) as caught, \
            SqliteStore(db) as store:
            # a page in the middle may only show once it is read
            store.list_executions()
            for n in range(50):
                store.get_execution(f"ex-{n}")
            store.create_execution(execution_id="ex-new", workflow_id="faults.gated",
                                   input_json=None, max_attempts=1, retry_backoff=1.0,
                                   now=1_900_000_000.0)
    message = str(caught.value)
    assert str(db) in message
    assert any(word in message for word in ("corrupt", "not a durablectl database",
                                            "malformed")), message
    assert digest(db) == before
    done = cli(db, "list")
    assert done.returncode == 6, (done.stdout, done.stderr)
    one_error_line(done, str(db))
    assert digest(db) == before
    if damage is _page_overwritten:
        # SQLite finds a bad page only when it reads it: the open (which reads the header and
        # the schema) succeeds, and a write that touches other pages only goes through. Checking
        # every page on each open (PRAGMA quick_check) would cost a full read of the file, so
        # the damage is reported — clearly, exit 6 — by the first read that reaches it.
        return
    done = cli(db, "start", "faults.gated")
    assert done.returncode == 6, (done.stdout, done.stderr)
    one_error_line(done, str(db))
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names


# -- a newer schema -----------------------------------------------------------------------------
def test_a_newer_schema_is_refused_by_the_cli_and_left_unchanged(tmp_path: Path) -> None:
    """The store side is tests/test_store_sqlite.py::test_a_database_of_a_newer_version_is_
    refused_untouched; here the CLI and the daemon."""
    db = tmp_path / "durable.db"
    _valid_db(db, executions=1)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    before = digest(db)
    for args in (("list",), ("start", "faults.gated"), ("daemon", "run")):
        done = cli(db, *args)
        assert done.returncode == 6, (args, done.stdout, done.stderr)
        line = one_error_line(done, str(db), "newer", "upgrade durablectl",
                              logged=args[0] == "daemon")
        assert f"schema version {LATEST_VERSION + 1}" in line
    assert digest(db) == before


# -- under a running daemon ---------------------------------------------------------------------
def _replace_under_the_daemon(daemon: DaemonHarness) -> tuple[int, Path, str]:
    daemon.write_module("basic", BASIC)
    pid = daemon.start()
    log_file = Path(daemon.status()["log_file"])
    # some history in the daemon's WAL
    execution_id = daemon.start_execution("t.signal.v1", {"x": 1})
    daemon.wait_status(execution_id, "waiting")
    daemon.store.close()
    daemon._store = None
    other = daemon.tmp / "other.db"
    _valid_db(other, executions=1)  # a valid durablectl file, closed cleanly: no -wal of its own
    other_digest = digest(other)
    os.replace(other, daemon.db)
    wait_until(lambda: not pid_alive(pid), "the daemon stopped", timeout=15)
    return pid, log_file, other_digest


def test_the_daemon_stops_when_its_database_file_is_replaced(daemon: DaemonHarness) -> None:
    _pid, log_file, other_digest = _replace_under_the_daemon(daemon)
    assert digest(daemon.db) == other_digest  # it wrote nothing into the new file
    assert daemon.cli("daemon", "status").returncode == 4
    lines = [line for line in log_file.read_text().splitlines() if "replaced" in line]
    # the log record and the stderr line (the log file is the daemon's stderr) say the same
    assert lines and all(f"the database file {daemon.db} was deleted or replaced" in line
                         for line in lines)
    assert [line for line in lines if line.startswith("error: ")] == [
        f"error: the database file {daemon.db} was deleted or replaced; stopping"]


def test_a_file_replaced_under_the_daemon_reads_as_itself_afterwards(
        daemon: DaemonHarness) -> None:
    _replace_under_the_daemon(daemon)
    with SqliteStore(daemon.db) as store:
        assert [e.execution_id for e in store.list_executions()] == ["ex-0"]
        assert store.known_workflows() == {}


def test_the_daemon_keeps_running_through_a_transient_lock(daemon: DaemonHarness) -> None:
    """A step finishes while another process holds the lock for ~1.5 s (busy_timeout 200 ms):
    its result cannot be committed, the run aborts, and the daemon — still running — re-runs
    that step once the lock is gone; the step committed before the lock never runs again."""
    daemon.write_config("[sqlite]\nbusy_timeout_ms = 200")
    daemon.write_module("basic", BASIC)
    pid = daemon.start()
    log = daemon.tmp / "steps.log"
    release = daemon.tmp / "release"
    execution_id = daemon.start_execution("t.crash.v1",
                                          {"log": str(log), "release": str(release)})
    wait_until(lambda: log.exists() and log.read_text().splitlines() == ["a", "b"],
               "step b is running")
    log_file = Path(daemon.status()["log_file"])
    with LockHolder(daemon.db):
        held_until = time.monotonic() + 1.5  # across several busy timeouts and daemon ticks
        release.touch()  # step b returns now; its result cannot be committed
        wait_until(lambda: "locked by another process" in log_file.read_text(),
                   "the daemon met the lock")
        time.sleep(max(0.0, held_until - time.monotonic()))
        assert pid_alive(pid)
    daemon.nudge()
    done = daemon.wait_status(execution_id, "completed", "failed", timeout=15)
    assert done.status == "completed", done
    assert done.result == {"a": "a-done", "b": "released", "c": "c-done"}
    runs = log.read_text().splitlines()
    assert runs.count("a") == 1 and runs.count("c") == 1 and runs.count("b") >= 1
    assert pid_alive(pid) and daemon.status()["pid"] == pid
