"""Crash tests with real processes and a real SIGKILL (SPEC §8, DESIGN-NOTES §5 and §9).

Workers run ``tests/crash_worker.py`` in subprocesses. Kill points are deterministic: the worker
writes a line at the point (a step body's side-effect line, or a marker) and SIGSTOPs itself
there, every thread at once; the test waits for the line and the stop, checks what the database
holds at that frozen instant, and sends SIGKILL. The side-effect log has one line per real
execution of a step body, so it says exactly which steps ran again after a restart. Cases that
need one worker per kill point run side by side, each on its own database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durablectl import DurableClient, SqliteStore

WORKER = Path(__file__).with_name("crash_worker.py")
TIMEOUT = 10.0


class Workers:
    """The subprocesses of one test, all killed at the end whatever happened."""

    def __init__(self, db_path: Path) -> None:
        self.db = str(db_path)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tags: dict[int, str] = {}

    # processes -------------------------------------------------------------------------------
    def _spawn(self, tag: str, *args: str) -> subprocess.Popen[bytes]:
        with open(f"{self.db}.{tag}.stderr", "wb") as stderr:
            proc = subprocess.Popen([sys.executable, str(WORKER), self.db, *args, "--tag", tag],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=stderr, cwd=str(WORKER.parent.parent))
        self.procs.append(proc)
        self.tags[proc.pid] = tag
        return proc

    def start(self, mode: str, tag: str, *, lease: float = 30.0,
              until: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        args = [mode, "--lease", str(lease)]
        for execution_id in until:
            args += ["--until", execution_id]
        return self._spawn(tag, *args)

    def send_signals(self, tag: str, execution_id: str,
                     *payloads: str) -> subprocess.Popen[bytes]:
        """Another process sends ``go`` signals through a ``DurableClient``."""
        return self._spawn(tag, "signal", execution_id, *payloads)

    def wait_stopped(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the process is stopped (it stops itself at its kill point)."""
        def stopped() -> bool:
            pid, state = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
            if pid == 0:
                return False
            if os.WIFSTOPPED(state):
                return True
            raise AssertionError(f"{self.tags[proc.pid]} ended ({state}) instead of stopping\n"
                                 f"{self.diagnostics()}")
        self.wait_until(stopped, f"{self.tags[proc.pid]} to stop")

    def pause_outside_a_write(self, proc: subprocess.Popen[bytes]) -> None:
        """Leave the (stopped) process stopped at an instant it holds no SQLite write lock: a
        writer paused mid-transaction blocks every other writer, which is SQLite's rule and not
        what the lease tests are about."""
        for _ in range(200):
            probe = sqlite3.connect(self.db, timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                pass
            finally:
                probe.close()
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.005)
            os.kill(proc.pid, signal.SIGSTOP)
            self.wait_stopped(proc)
        raise AssertionError(f"{self.tags[proc.pid]} never left its write transaction")

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(TIMEOUT) == -signal.SIGKILL

    def finish(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for a process that ends by itself and require that it succeeded."""
        try:
            code = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.tags[proc.pid]} did not finish\n"
                                 f"{self.diagnostics()}") from None
        assert code == 0, f"{self.tags[proc.pid]} exited {code}\n{self.diagnostics()}"

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # SIGKILL also ends a SIGSTOPped process
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(TIMEOUT)

    # what the workers wrote ------------------------------------------------------------------
    def lines(self, suffix: str) -> list[list[str]]:
        try:
            text = Path(self.db + suffix).read_text()
        except FileNotFoundError:
            return []
        return [line.split(" ") for line in text.splitlines()]

    def effects(self, label: str) -> list[str]:
        """``STEP TAG`` for every real run of a step body of the execution labelled so."""
        return [f"{step} {tag}" for lbl, step, tag, _at in self.lines(".effects") if lbl == label]

    def has_effect(self, label: str, step: str, tag: str) -> bool:
        return f"{step} {tag}" in self.effects(label)

    def has_marker(self, label: str, point: str, tag: str) -> bool:
        return [label, point, tag] in self.lines(".markers")

    def diagnostics(self) -> str:
        parts = []
        for suffix in (".effects", ".markers", ".outcomes", ".starts"):
            parts.append(f"--- {suffix}: {self.lines(suffix)}")
        for tag in dict.fromkeys(self.tags.values()):
            path = Path(f"{self.db}.{tag}.stderr")
            if path.exists():
                parts.append(f"--- stderr of {tag}:\n{path.read_text()[-3000:]}")
        return "\n".join(parts)

    def wait_until(self, predicate: Callable[[], Any], what: str) -> Any:
        """Poll until the predicate holds; states, never durations, decide what happens next."""
        end = time.monotonic() + TIMEOUT
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.005)


@pytest.fixture
def workers(db_path: Path) -> Iterator[Workers]:
    group = Workers(db_path)
    try:
        yield group
    finally:
        group.cleanup()


Database = tuple[Workers, SqliteStore]


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[Callable[[str], Database]]:
    """More databases, each with its own workers (for cases run side by side)."""
    opened: list[Database] = []

    def open_database(name: str) -> Database:
        path = tmp_path / name / "durable.db"
        path.parent.mkdir()
        opened.append((Workers(path), SqliteStore(path)))
        return opened[-1]

    try:
        yield open_database
    finally:
        for group, store in opened:
            try:
                group.cleanup()
            finally:
                store.close()


def start(store: SqliteStore, workflow_id: str, data: dict[str, Any]) -> str:
    """Store an execution from the test process, a client like any other (its warning that no
    worker runs is expected here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return DurableClient(store).start_execution(workflow_id, data)


def step_ids(store: SqliteStore, execution_id: str) -> list[str]:
    return [s.step_id for s in store.list_step_results(execution_id)]


def step_results(store: SqliteStore, execution_id: str) -> dict[str, Any]:
    return {s.step_id: s.result for s in store.list_step_results(execution_id)}


def status(store: SqliteStore, execution_id: str) -> str:
    execution = store.get_execution(execution_id)
    assert execution is not None
    return execution.status


def query(store: SqliteStore, sql: str, *params: Any) -> list[Any]:
    with store.raw_read() as conn:
        return conn.execute(sql, params).fetchall()


def lease_of(store: SqliteStore, execution_id: str) -> tuple[str | None, float | None]:
    owner, until = query(store, "SELECT lease_owner, lease_until FROM executions"
                                " WHERE execution_id = ?", execution_id)[0]
    return owner, until


def effect_time(workers: Workers, label: str, step: str, tag: str) -> float:
    return next(float(at) for lbl, stp, tg, at in workers.lines(".effects")
                if (lbl, stp, tg) == (label, step, tag))


STEPS = ["a", "b", "c"]


def _killed_at_each_point(databases: Callable[[str], Database],
                          points: dict[str, str]) -> dict[str, tuple[Workers, SqliteStore, str]]:
    """One database per kill point, one execution of crash.steps in each, its worker stopped
    at the point (all side by side); returns the cases once every worker is stopped."""
    cases = {}
    for step, point in points.items():
        group, store = databases(step)
        eid = start(store, "crash.steps", {"label": "x", "block": point})
        cases[step] = (group, store, eid)
    procs = {step: group.start("crash", "w1") for step, (group, _s, _e) in cases.items()}
    for step, (group, _store, _eid) in cases.items():
        group.wait_stopped(procs[step])
    return cases


# 1. killed in the middle of a step ------------------------------------------------------------
def test_killed_mid_step_committed_steps_never_rerun_and_the_running_step_runs_again(
        databases: Callable[[str], Database]) -> None:
    """Killed inside the body of a, of b and of c (three databases side by side)."""
    cases = _killed_at_each_point(databases, {s: s for s in STEPS})
    for s, (group, store, eid) in cases.items():
        # the invariant at the frozen instant: the running step's side effect happened, every
        # earlier step's result is committed, the running step's is not
        assert group.effects("x")[-1] == f"{s} w1"
        assert step_ids(store, eid) == STEPS[:STEPS.index(s)], s
        assert status(store, eid) == "running"
        group.kill(group.procs[0])

    restarted = [group.start("run", "w2", until=(eid,)) for group, _s, eid in cases.values()]
    for (group, _store, _eid), proc in zip(cases.values(), restarted, strict=True):
        group.finish(proc)

    for s, (group, store, eid) in cases.items():
        before, rest = STEPS[:STEPS.index(s)], STEPS[STEPS.index(s):]
        expected = {d: f"{d} by {'w1' if d in before else 'w2'}" for d in STEPS}
        assert status(store, eid) == "completed"
        assert store.get_execution(eid).result == expected  # type: ignore[union-attr]
        assert step_results(store, eid) == expected  # one stored result per step
        # earlier steps ran once, the interrupted one twice (at-least-once), later ones once
        assert group.effects("x") == (
            [f"{d} w1" for d in before] + [f"{s} w1"] + [f"{d} w2" for d in rest]), s


# 2. killed right after a step committed -------------------------------------------------------
def test_killed_right_after_a_step_commits_no_step_runs_twice(
        databases: Callable[[str], Database]) -> None:
    """Frozen and killed right after a's, b's and c's result came back to the workflow (the
    last one has all its steps and dies before finishing)."""
    cases = _killed_at_each_point(databases, {s: f"after:{s}" for s in STEPS})
    for s, (group, store, eid) in cases.items():
        done = STEPS[:STEPS.index(s) + 1]
        assert group.has_marker("x", f"after:{s}", "w1")
        # the step returned, so its result was committed before: the process froze at once
        assert step_ids(store, eid) == done, f"after:{s}"
        assert group.effects("x") == [f"{d} w1" for d in done]
        assert status(store, eid) == "running"
        group.kill(group.procs[0])

    restarted = [group.start("run", "w2", until=(eid,)) for group, _s, eid in cases.values()]
    for (group, _store, _eid), proc in zip(cases.values(), restarted, strict=True):
        group.finish(proc)

    for s, (group, store, eid) in cases.items():
        done = STEPS[:STEPS.index(s) + 1]
        expected = {d: f"{d} by {'w1' if d in done else 'w2'}" for d in STEPS}
        assert status(store, eid) == "completed"
        assert store.get_execution(eid).result == expected  # type: ignore[union-attr]
        assert step_results(store, eid) == expected
        # exactly once each: nothing committed ran again, nothing uncommitted was skipped
        assert group.effects("x") == [f"{d} {'w1' if d in done else 'w2'}" for d in STEPS], s


# 3. killed while parked sleeping --------------------------------------------------------------
def test_killed_while_parked_sleeping_the_timer_survives_and_the_execution_completes(
        store: SqliteStore, workers: Workers) -> None:
    eid = start(store, "crash.sleeper", {"label": "nap", "block": "parked", "seconds": 0.3})

    w1 = workers.start("crash", "w1")
    workers.wait_stopped(w1)
    assert workers.has_marker("nap", "parked", "w1")
    # frozen right after the park committed: the sleep and its timer are in the database
    assert status(store, eid) == "sleeping"
    assert query(store, "SELECT kind, step_id, state FROM timers WHERE execution_id = ?",
                 eid) == [("sleep", "nap", "pending")]
    assert step_ids(store, eid) == ["a"]
    workers.kill(w1)

    workers.finish(workers.start("run", "w2", until=(eid,)))

    assert store.get_execution(eid).result == {  # type: ignore[union-attr]
        "a": "a by w1", "b": "b by w2"}
    assert step_ids(store, eid) == ["a", "nap", "b"]
    assert workers.effects("nap") == ["a w1", "b w2"]


# 4. signals sent by other processes while the worker dies and while it is dead ---------------
def test_signals_sent_from_other_processes_around_a_kill_are_delivered_once_in_order(
        store: SqliteStore, workers: Workers) -> None:
    count = 7
    eid = start(store, "crash.signals", {"label": "sig", "block": "got-1", "count": count})
    workers.finish(workers.send_signals("s1", eid, '{"n": 0}', '{"n": 1}'))  # buffered

    w1 = workers.start("crash", "w1")
    workers.wait_stopped(w1)
    assert workers.effects("sig") == ["got-0 w1", "got-1 w1"]
    assert step_ids(store, eid) == ["sig-0", "got-0", "sig-1"]
    # another process signals while the worker is being killed ...
    sender = workers.send_signals("s2", eid, '{"n": 2}', '{"n": 3}', '{"n": 4}')
    workers.kill(w1)
    workers.finish(sender)
    # ... and while it is dead (this test process is a third one)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        DurableClient(store).signal(eid, "go", {"n": 5})

    w2 = workers.start("run", "w2")
    workers.wait_until(lambda: status(store, eid) == "waiting" and "got-5" in step_ids(store, eid),
                       "w2 to consume the buffered signals and wait for the last one")
    workers.kill(w2)  # killed while parked waiting for a signal
    workers.finish(workers.send_signals("s3", eid, '{"n": 6}'))  # while no worker is alive
    assert status(store, eid) == "pending"  # the signal woke it, with nobody to run it

    workers.finish(workers.start("run", "w3", until=(eid,)))

    assert store.get_execution(eid).result == [  # type: ignore[union-attr]
        {"n": n} for n in range(count)]
    results = step_results(store, eid)
    assert [results[f"sig-{n}"] for n in range(count)] == [
        {"kind": "signal", "payload": {"n": n}} for n in range(count)]
    # every signal stored once and consumed once, by the wait of its rank
    rows = query(store, "SELECT seq, payload, consumed_by FROM signals WHERE execution_id = ?"
                 " ORDER BY seq", eid)
    assert [(seq, json.loads(payload), by) for seq, payload, by in rows] == [
        (n + 1, {"n": n}, f"sig-{n}") for n in range(count)]
    delivered = [e.data["seq"] for e in store.list_audit_entries(eid)
                 if e.kind == "signal_delivered"]
    assert delivered == list(range(1, count + 1))
    assert workers.effects("sig") == (
        ["got-0 w1", "got-1 w1", "got-1 w2"] + [f"got-{n} w2" for n in range(2, 6)] +
        ["got-6 w3"])


# 5. the dead worker's lock is free, so its lease is taken over at once ------------------------
def test_a_restarted_worker_takes_over_a_dead_workers_lease_within_a_second(
        store: SqliteStore, workers: Workers) -> None:
    eid = start(store, "crash.steps", {"label": "fast", "block": "b"})
    w1 = workers.start("crash", "w1", lease=30)
    workers.wait_stopped(w1)
    owner, lease_until = lease_of(store, eid)
    assert owner == f"w1-{w1.pid}"
    assert lease_until is not None
    assert lease_until - time.time() > 20  # lease expiry cannot explain a fast takeover
    workers.kill(w1)

    spawned = time.time()
    w2 = workers.start("run", "w2", lease=30, until=(eid,))
    workers.wait_until(lambda: workers.has_effect("fast", "b", "w2"), "b to run again in w2")
    entering = next(float(at) for tag, phase, at, _id in workers.lines(".starts")
                    if tag == "w2" and phase == "entering")
    resumed = effect_time(workers, "fast", "b", "w2")
    assert resumed - entering < 1.0, f"took {resumed - entering:.3f}s after the service started"
    assert resumed - spawned < 5.0, f"took {resumed - spawned:.3f}s after the process started"
    workers.finish(w2)
    assert status(store, eid) == "completed"
    assert workers.effects("fast") == ["a w1", "b w1", "b w2", "c w2"]


# 6. a paused worker's lease expires; its write after waking is refused ------------------------
def test_a_paused_worker_loses_its_lease_and_its_stale_write_is_refused(
        store: SqliteStore, workers: Workers) -> None:
    """w1 (lease 1 s) is paused inside step b; w2, started while that lease is still valid,
    takes the execution over only once it has expired, runs b again and pauses inside c, holding
    the lease; then w1 wakes and its b returns: the write is refused by the lease check alone
    (the execution is still running), w1 drops the execution, and w2, woken, completes it."""
    eid = start(store, "crash.steps", {"label": "lease", "block": {"w1": "b", "w2": "c"}})
    w1 = workers.start("crash", "w1", lease=1)
    workers.wait_stopped(w1)
    workers.pause_outside_a_write(w1)
    owner, w1_lease_until = lease_of(store, eid)
    assert owner == f"w1-{w1.pid}"
    assert w1_lease_until is not None

    # w1's flock is still held (it is alive), so only the expiry of its lease lets w2 in
    w2 = workers.start("crash", "w2", lease=30, until=(eid,))
    workers.wait_until(lambda: time.time() > w1_lease_until, "w1's lease to expire")
    # nothing else happens: w2's quiet fallback tick (1 s) must find the expired lease itself
    workers.wait_stopped(w2)
    workers.pause_outside_a_write(w2)
    assert workers.effects("lease") == ["a w1", "b w1", "b w2", "c w2"]
    assert effect_time(workers, "lease", "b", "w2") >= w1_lease_until, "taken before expiry"
    assert effect_time(workers, "lease", "b", "w2") < w1_lease_until + 3, "taken over late"
    assert lease_of(store, eid)[0] == f"w2-{w2.pid}"
    assert step_results(store, eid) == {"a": "a by w1", "b": "b by w2"}

    # wake w1: its step b returns and tries to store "b by w1" while w2 holds the lease
    Path(f"{workers.db}.release.w1").touch()
    os.kill(w1.pid, signal.SIGCONT)
    refused = workers.wait_until(
        lambda: [o for o in workers.lines(".outcomes") if o[:2] == ["w1", eid]],
        "w1's run to end")
    assert refused[0][2] == "aborted", refused
    assert "no longer holds the lease" in " ".join(refused[0][3:]), refused
    assert w1.poll() is None  # w1 dropped the execution and lives on
    assert status(store, eid) == "running"
    assert lease_of(store, eid)[0] == f"w2-{w2.pid}"
    assert step_results(store, eid) == {"a": "a by w1", "b": "b by w2"}  # not overwritten

    Path(f"{workers.db}.release.w2").touch()
    os.kill(w2.pid, signal.SIGCONT)
    workers.finish(w2)
    expected = {"a": "a by w1", "b": "b by w2", "c": "c by w2"}
    assert status(store, eid) == "completed"
    assert store.get_execution(eid).result == expected  # type: ignore[union-attr]
    assert step_results(store, eid) == expected
    completions = [e.data["step_id"] for e in store.list_audit_entries(eid)
                   if e.kind == "step_completed"]
    assert completions == ["a", "b", "c"]  # one commit per step: w1's b never got in
    assert workers.effects("lease") == ["a w1", "b w1", "b w2", "c w2"]  # w1 never reached c
    assert [o[2] for o in workers.lines(".outcomes") if o[:2] == ["w1", eid]] == ["aborted"]
