"""Crash torture (``make torture``; a short run in ``tests/test_torture.py``): the real daemon on a
mix of workflows, a driver process starting executions and sending signals, and a killer loop
that SIGKILLs the daemon at random (seeded) moments and restarts it.

    python -m bench.torture [--kills N] [--seed S] [--min-ms 50] [--max-ms 400] [--dir PATH]
                            [--keep]

Invariants checked at the end (printed as figures; exit 1 on any violation):

- Incarnations. Step bodies run inside the daemon process (threads), so SIGKILL stops them all
  at once. Before each daemon start the harness writes the incarnation number k to a file,
  and starts daemon k only once daemon k-1 is dead; every step body appends
  ``k execution_id step_id`` to an append-only side-effect log and fsyncs it BEFORE returning.
  So a log line tagged k was written by daemon k.
- Snapshots. After kill k (daemon dead, before start k+1) the harness reads the set C_k of
  committed steps from the database. A step first seen committed in C_k was committed by a daemon
  <= k; if it ran again, a line tagged > k would exist. Invariant: every log line of a step has
  tag <= the first snapshot index that shows it committed (no committed step ran again). A step
  that was NOT committed at a kill may legitimately run again (at-least-once): those re-runs are
  counted and printed, never flagged.
- Steps are sequential in every workflow here, so an execution may leave at most one step run
  per incarnation that runs again later (it moves on only once a step is committed).
- Every step the execution's input implies is in the step table and has >= 1 log line; no log
  line names a step the input does not imply (no phantom or lost step).
- Every execution the driver started (and only those, plus schedule runs) exists, is finished,
  and its result is the one its input implies (none lost, none stuck).
- Signals: a send that raised counts as sent only if the database shows its unique payload;
  every signal sent was consumed exactly once (one row, consumed) and the execution received the
  payloads in the order they were sent.
- Idempotent starts: every start with the same key returned the same execution; one per key.
- Schedules: one execution per ``schedule_runs`` row, every run linked to one execution; the
  1 s interval schedule (catch_up "all") has a contiguous grid of ticks from its first to its last,
  reaching to the pause (none missed, none doubled); same for the minute cron schedule.
- ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DURABLECTL = Path(sys.executable).with_name("durablectl")
ACTIVE = ("pending", "running", "sleeping", "waiting")

WORKFLOWS = '''
import os

from durablectl import Signal, workflow

LOG = {log!r}
INCARNATION = {incarnation!r}
Go = Signal("go")
Maybe = Signal("maybe")


def effect(execution_id, step_id):
    with open(INCARNATION) as handle:
        incarnation = handle.read().strip()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{{incarnation}} {{execution_id}} {{step_id}}\\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return step_id


@workflow("t.steps")
async def steps(ctx, data):
    for i in range(data["n"]):
        await ctx.step(f"s{{i}}", lambda i=i: effect(ctx.execution_id, f"s{{i}}"))
        if i == 0 and data["sleep"]:
            await ctx.sleep(data["sleep"], step_id="nap")
    return {{"steps": data["n"]}}


@workflow("t.signals")
async def signals(ctx, data):
    got = []
    for i in range(data["count"]):
        payload = await ctx.wait_for_signal(Go, step_id=f"sig-{{i}}")
        await ctx.step(f"got-{{i}}", lambda i=i: effect(ctx.execution_id, f"got-{{i}}"))
        got.append(payload)
    return got


@workflow("t.maybe")
async def maybe(ctx, data):
    await ctx.step("pre", lambda: effect(ctx.execution_id, "pre"))
    answer = await ctx.wait_for_signal(Maybe, timeout=data["timeout"], step_id="maybe")
    await ctx.step("post", lambda: effect(ctx.execution_id, "post"))
    return {{"kind": answer.kind,
            "payload": answer.payload if answer.kind == "signal" else None}}


@workflow("t.comp")
async def comp(ctx, data):
    await ctx.step("a").up(lambda: effect(ctx.execution_id, "a")).down(
        lambda result: effect(ctx.execution_id, "rollback:a"))
    await ctx.step("b").up(lambda: effect(ctx.execution_id, "b")).down(
        lambda result: effect(ctx.execution_id, "rollback:b"))
    if data["fail"]:
        await ctx.rollback()
        return "rolled_back"
    await ctx.step("c", lambda: effect(ctx.execution_id, "c"))
    return "done"


@workflow("t.idem")
async def idem(ctx, data):
    await ctx.step("only", lambda: effect(ctx.execution_id, "only"))
    return data["key"]


@workflow("t.tick")
async def tick(ctx, data):
    await ctx.step("tick", lambda: effect(ctx.execution_id, "tick"))
    return "ok"
'''


def expected_steps(workflow: str, data: dict[str, Any]) -> list[str]:
    """The logged step ids an execution's input implies, in order."""
    if workflow == "t.steps":
        return [f"s{i}" for i in range(data["n"])]
    if workflow == "t.signals":
        return [f"got-{i}" for i in range(data["count"])]
    if workflow == "t.maybe":
        return ["pre", "post"]
    if workflow == "t.comp":
        return ["a", "b", "rollback:b", "rollback:a"] if data["fail"] else ["a", "b", "c"]
    if workflow == "t.idem":
        return ["only"]
    return ["tick"]


# -- the files of one run -------------------------------------------------------------------------
class Layout:
    def __init__(self, base: Path, synchronous: str = "FULL") -> None:
        self.base = base
        self.synchronous = synchronous
        self.db = base / "durable.db"
        self.workflows = base / "workflows"
        self.config = base / "durablectl.toml"
        self.log = base / "effects.log"
        self.incarnation = base / "incarnation"
        self.journal = base / "driver.jsonl"
        self.stop_driving = base / "stop-driving"
        self.driver_done = base / "driver-done"
        self.runtime = Path(tempfile.mkdtemp(prefix="dtor-"))  # a short socket path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLECTL_")}
        for name, folder in (("XDG_STATE_HOME", base / "state"),
                             ("XDG_CONFIG_HOME", base / "config"),
                             ("XDG_DATA_HOME", base / "data"),
                             ("XDG_RUNTIME_DIR", self.runtime)):
            folder.mkdir(mode=0o700, exist_ok=True)
            self.env[name] = str(folder)

    def write(self) -> None:
        self.workflows.mkdir(exist_ok=True)
        (self.workflows / "torture.py").write_text(
            WORKFLOWS.format(log=str(self.log), incarnation=str(self.incarnation)))
        self.config.write_text(
            'workflows = "workflows"\n[daemon]\ngrace_seconds = 2\n'
            '[schedules]\ncatch_up = "all"\nmax_catch_up = 1000\n'
            f'[sqlite]\nsynchronous = "{self.synchronous}"\n')
        self.set_incarnation(0)

    def set_incarnation(self, number: int) -> None:
        scratch = self.base / "incarnation.tmp"
        scratch.write_text(f"{number}\n")
        os.replace(scratch, self.incarnation)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DURABLECTL), *args, "--db", str(self.db),
                               "--config", str(self.config)],
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.base)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not): the daemon's own check."""
    from durablectl.daemon.process import process_alive

    return process_alive(pid)


def _is_durablectl(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"durablectl" in handle.read()
    except OSError:
        return False


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db), timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def retrying(what: str, job: Any, *, attempts: int = 400) -> Any:
    """``job()`` until it returns; lock contention and a daemon being killed are expected."""
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            return job()
        except Exception as exc:  # every failure here is retried, then reported
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"{what}: still failing after {attempts} tries: {last!r}")


# -- the driver (a separate process) ----------------------------------------------------------
def drive(base: Path, seed: int, busy_ms: int) -> int:
    from durablectl import DurableClient, ExecutionNotActive, SqliteStore
    from durablectl.daemon.ipc import nudge
    from durablectl.daemon.process import socket_for

    warnings.simplefilter("ignore")
    layout_db = base / "durable.db"
    rng = random.Random(seed * 7919 + 1)
    # a short busy time-out: some calls fail with "database is locked" and are retried
    store = SqliteStore(layout_db, busy_timeout_ms=busy_ms)
    client = DurableClient(store)
    journal = open(base / "driver.jsonl", "a")  # noqa: SIM115 - closed in finally
    owed: list[tuple[str, str, str, dict[str, Any]]] = []  # execution, signal, tag, payload
    keys: list[str] = []
    counter = 0

    def record(entry: dict[str, Any]) -> None:
        journal.write(json.dumps(entry) + "\n")
        journal.flush()

    def poke() -> None:
        with contextlib.suppress(Exception):
            nudge(socket_for(str(layout_db), store))

    def lookup(sql: str, *args: Any) -> Any:
        def job() -> Any:
            with contextlib.closing(connect(layout_db)) as conn:
                return conn.execute(sql, args).fetchone()
        return retrying("a read", job)

    def start(workflow: str, data: dict[str, Any], key: str | None) -> str:
        for _ in range(400):
            try:
                execution_id = client.start_execution(workflow, data, idempotency_key=key)
                poke()
                return execution_id
            except Exception as exc:  # maybe stored: the tag says
                record({"op": "error", "call": "start", "error": repr(exc)})
                row = lookup("SELECT execution_id FROM executions WHERE workflow_id = ?"
                             " AND json_extract(input, '$.tag') = ?", workflow, data["tag"])
                if row is not None:
                    return str(row[0])
                time.sleep(0.05)
        raise RuntimeError(f"could not start {workflow} {data}")

    def send(execution_id: str, signal_id: str, tag: str, payload: dict[str, Any]) -> None:
        failures = 0
        for _ in range(400):
            try:
                client.signal(execution_id, signal_id, payload)
                poke()
                record({"op": "signal", "id": execution_id, "signal": signal_id,
                        "payload": payload, "failures": failures})
                return
            except ExecutionNotActive as exc:
                # the wait's time-out won and the execution finished: the signal is refused,
                # never stored (SPEC §3), which is the right outcome of that race
                record({"op": "refused", "id": execution_id, "signal": signal_id,
                        "error": repr(exc)})
                return
            except Exception as exc:  # a send that raised is not sent unless stored
                failures += 1
                record({"op": "error", "call": "signal", "error": repr(exc)})
                row = lookup("SELECT 1 FROM signals WHERE execution_id = ? AND signal_id = ?"
                             " AND json_extract(payload, '$.tag') = ?", execution_id,
                             signal_id, tag)
                if row is not None:
                    record({"op": "signal", "id": execution_id, "signal": signal_id,
                            "payload": payload, "failures": failures})
                    return
                time.sleep(0.05)
        raise RuntimeError(f"could not send {signal_id} to {execution_id}")

    def new_execution() -> None:
        nonlocal counter
        counter += 1
        tag = f"x{counter}"
        kind = rng.choice(["steps", "steps", "signals", "signals", "maybe", "comp", "idem"])
        key: str | None = None
        if kind == "steps":
            data: dict[str, Any] = {"tag": tag, "n": rng.randint(1, 5),
                                    "sleep": rng.choice([0, 0, 0.2, 0.5])}
            key = f"k-{tag}" if rng.random() < 0.5 else None
        elif kind == "signals":
            data = {"tag": tag, "count": rng.randint(1, 4)}
        elif kind == "maybe":
            # a long time-out with a signal, a short one without, or a race of the two
            variant = rng.choice(["send", "none", "race"])
            data = {"tag": tag, "send": variant != "none", "race": variant == "race",
                    "timeout": {"send": 60.0, "none": 0.3}.get(variant, rng.uniform(0.05, 0.5))}
        elif kind == "comp":
            data = {"tag": tag, "fail": rng.random() < 0.5}
        else:
            if keys and rng.random() < 0.6:  # the same key again: the same execution
                key = rng.choice(keys)
                data = {"tag": key, "key": key}
            else:
                key = f"idem-{tag}"
                keys.append(key)
                data = {"tag": key, "key": key}
        workflow = f"t.{kind}"
        execution_id = start(workflow, data, key)
        record({"op": "start", "id": execution_id, "workflow": workflow, "input": data,
                "key": key})
        if kind == "signals":
            for i in range(data["count"]):
                sig_tag = f"{tag}-{i}"
                owed.append((execution_id, "go", sig_tag, {"tag": sig_tag, "i": i}))
        elif kind == "maybe" and data["send"]:
            owed.append((execution_id, "maybe", f"{tag}-m", {"tag": f"{tag}-m"}))

    try:
        while not (base / "stop-driving").exists():
            if rng.random() < 0.5 or not owed:
                new_execution()
            if owed:
                # send the oldest owed signal of a random execution (per-execution order kept)
                execution_id = rng.choice(owed)[0]
                index = next(i for i, o in enumerate(owed) if o[0] == execution_id)
                send(*owed.pop(index))
            time.sleep(rng.uniform(0.005, 0.05))
        while owed:
            send(*owed.pop(0))
    finally:
        journal.close()
        store.close()
    (base / "driver-done").write_text("done\n")
    return 0


# -- the killer and the checks ----------------------------------------------------------------
class Torture:
    def __init__(self, layout: Layout, kills: int, seed: int, min_ms: int, max_ms: int,
                 driver_busy_ms: int = 50, early: float = 0.25) -> None:
        self.early = early
        self.early_kills = 0
        self.driver_busy_ms = driver_busy_ms
        self.layout = layout
        self.kills = kills
        self.rng = random.Random(seed)
        self.seed = seed
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.pids: set[int] = set()
        # index k: the committed steps once daemon incarnation k is dead (after kill k)
        self.snapshots: list[set[tuple[str, str]]] = []
        self.violations: list[str] = []
        self.figures: dict[str, Any] = {}
        self.driver: subprocess.Popen[bytes] | None = None

    def fail(self, message: str) -> None:
        if len(self.violations) < 50:
            print(f"VIOLATION: {message}", flush=True)
        self.violations.append(message)

    # daemons ----------------------------------------------------------------------------------
    def start_daemon(self, incarnation: int) -> int:
        self.layout.set_incarnation(incarnation)
        last = ""
        for _ in range(50):
            done = self.layout.cli("daemon", "start", "--json")
            if done.returncode == 0:
                pid = int(json.loads(done.stdout)["pid"])
                self.pids.add(pid)
                return pid
            last = done.stderr.strip()
            time.sleep(0.1)
        raise RuntimeError(f"the daemon does not start: {last}")

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 30
        while pid_alive(pid):
            if time.monotonic() > end:
                raise RuntimeError(f"daemon {pid} survives SIGKILL")
            time.sleep(0.005)

    def committed_steps(self) -> set[tuple[str, str]]:
        def job() -> set[tuple[str, str]]:
            with contextlib.closing(connect(self.layout.db)) as conn:
                rows = conn.execute("SELECT execution_id, step_id FROM steps"
                                    " WHERE completed_at IS NOT NULL").fetchall()
            return {(str(e), str(s)) for e, s in rows}
        result: set[tuple[str, str]] = retrying("reading the step table", job)
        return result

    def ensure_schedules(self) -> None:
        from durablectl import DurableClient, SqliteStore

        with contextlib.closing(SqliteStore(self.layout.db)) as store:
            client = DurableClient(store)
            client.ensure_schedule("t.tick", None, id="every-second", interval=1.0,
                                   catch_up="all", overlap="allow")
            client.ensure_schedule("t.tick", None, id="every-minute", cron="* * * * *",
                                   catch_up="all", overlap="allow")

    def pause_schedules(self) -> float:
        from durablectl import DurableClient, SqliteStore

        with contextlib.closing(SqliteStore(self.layout.db)) as store:
            client = DurableClient(store)
            for schedule_id in ("every-second", "every-minute"):
                retrying("pausing", lambda s=schedule_id: client.pause_schedule(s))
        return time.time()

    def run(self) -> int:
        layout = self.layout
        layout.write()
        started = time.monotonic()
        pid = self.start_daemon(0)
        self.ensure_schedules()
        with open(layout.base / "driver.stderr", "wb") as stderr:
            self.driver = subprocess.Popen(
                [sys.executable, "-m", "bench.torture", "drive", "--dir", str(layout.base),
                 "--seed", str(self.seed), "--driver-busy-ms", str(self.driver_busy_ms)],
                cwd=ROOT, env=layout.env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        for k in range(self.kills):
            if k > 0 and self.rng.random() < self.early:
                # `daemon run` killed at any instant of its start-up (before ready, too)
                self.layout.set_incarnation(k)
                proc = subprocess.Popen(
                    [str(DURABLECTL), "daemon", "run", "--db", str(layout.db), "--config",
                     str(layout.config)], env=layout.env, cwd=layout.base,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                self.pids.add(proc.pid)
                time.sleep(self.rng.uniform(0, self.max_ms * 2) / 1000)
                self.kill(proc.pid)
                proc.wait()
                self.early_kills += 1
            else:
                if k > 0:
                    pid = self.start_daemon(k)
                time.sleep(self.rng.uniform(self.min_ms, self.max_ms) / 1000)
                self.kill(pid)
            self.snapshots.append(self.committed_steps())  # index k: incarnation k is dead
            if self.driver.poll() is not None:
                raise RuntimeError("the driver died; see driver.stderr")
        final = self.kills
        pid = self.start_daemon(final)
        layout.stop_driving.write_text("stop\n")
        if self.driver.wait(timeout=300) != 0:
            raise RuntimeError("the driver failed; see driver.stderr")
        self.wait_quiet(timeout=120)
        paused_at = self.pause_schedules()
        self.wait_quiet(timeout=60)
        stopped = layout.cli("daemon", "stop", timeout=60)
        if stopped.returncode != 0:
            self.fail(f"daemon stop: {stopped.stderr.strip()}")
        self.figures["seconds"] = round(time.monotonic() - started, 1)
        self.check(paused_at)
        return 1 if self.violations else 0

    def wait_quiet(self, timeout: float) -> None:
        """Every execution finished (all of ours finish; the driver is done)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.closing(connect(self.layout.db)) as conn:
                active = conn.execute(
                    "SELECT count(*) FROM executions WHERE status IN (?, ?, ?, ?)",
                    ACTIVE).fetchone()[0]
            if not active:
                return
            time.sleep(0.1)

    def cleanup(self) -> None:
        if self.driver is not None and self.driver.poll() is None:
            self.driver.kill()
            self.driver.wait()
        with contextlib.suppress(Exception):
            self.layout.cli("daemon", "stop", timeout=30)
        for pid in self.pids:
            if pid_alive(pid) and _is_durablectl(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.layout.runtime, ignore_errors=True)

    # checks -----------------------------------------------------------------------------------
    def check(self, paused_at: float) -> None:
        layout = self.layout
        conn = connect(layout.db)
        conn.row_factory = sqlite3.Row
        try:
            self._check(conn, paused_at)
        finally:
            conn.close()

    def _check(self, conn: sqlite3.Connection, paused_at: float) -> None:
        journal = [json.loads(line) for line in self.layout.journal.read_text().splitlines()]
        starts = [e for e in journal if e["op"] == "start"]
        sends = [e for e in journal if e["op"] == "signal"]
        executions = {row["execution_id"]: row for row in conn.execute(
            "SELECT * FROM executions")}
        steps_table: dict[tuple[str, str], sqlite3.Row] = {
            (row["execution_id"], row["step_id"]): row for row in conn.execute(
                "SELECT * FROM steps")}
        log: dict[tuple[str, str], list[int]] = {}
        for line in self.layout.log.read_text().splitlines():
            incarnation, execution_id, step_id = line.split(" ", 2)
            log.setdefault((execution_id, step_id), []).append(int(incarnation))

        # executions the driver started: exist, finished, the result their input implies
        expected: dict[str, tuple[str, dict[str, Any]]] = {}
        by_key: dict[tuple[str, str], set[str]] = {}
        for entry in starts:
            expected[entry["id"]] = (entry["workflow"], entry["input"])
            if entry["key"] is not None:
                by_key.setdefault((entry["workflow"], entry["key"]), set()).add(entry["id"])
        sent: dict[str, list[Any]] = {}
        resent = 0
        for entry in sends:
            sent.setdefault(entry["id"], []).append(entry["payload"])
            resent += 1 if entry["failures"] else 0
        lost = stuck = wrong = races_lost = 0
        for execution_id, (workflow, data) in expected.items():
            row = executions.get(execution_id)
            if row is None:
                lost += 1
                self.fail(f"execution {execution_id} ({workflow}) is lost")
                continue
            if row["status"] in ACTIVE:
                stuck += 1
                self.fail(f"execution {execution_id} ({workflow}) is stuck: {row['status']}")
                continue
            want = self.expected_result(workflow, data, sent.get(execution_id, []))
            got = json.loads(row["result"]) if row["result"] is not None else None
            if workflow == "t.maybe" and data.get("race") and isinstance(got, dict) \
                    and got.get("kind") == "timeout":
                want = {"kind": "timeout", "payload": None}  # the time-out won the race
                races_lost += 1
            if row["status"] != "completed" or got != want:
                wrong += 1
                self.fail(f"execution {execution_id} ({workflow} {data}): {row['status']} "
                          f"{got!r}, expected completed {want!r} ({row['error']})")
        duplicates = 0
        for (workflow, key), ids in by_key.items():
            stored = conn.execute("SELECT count(*) FROM executions WHERE workflow_id = ? AND"
                                  " idempotency_key = ?", (workflow, key)).fetchone()[0]
            if len(ids) != 1 or stored != 1:
                duplicates += 1
                self.fail(f"idempotency key {key}: ids {sorted(ids)}, {stored} stored")
        repeated_keys = sum(1 for e in starts if e["workflow"] == "t.idem") - sum(
            1 for (w, _k) in by_key if w == "t.idem")

        # schedules: one execution per run, contiguous grids, nothing else unexplained
        runs = conn.execute("SELECT * FROM schedule_runs ORDER BY schedule_id, due_at").fetchall()
        ticks = [r for r in runs if r["outcome"] == "started"]
        tick_ids = [r["execution_id"] for r in ticks]
        if len(set(tick_ids)) != len(tick_ids):
            self.fail("a schedule run execution is shared by two ticks")
        if any(r["outcome"] != "started" for r in runs):
            self.fail(f"unexpected schedule run outcomes: "
                      f"{sorted({r['outcome'] for r in runs})}")
        scheduled = {e for e, row in executions.items() if row["workflow_id"] == "t.tick"}
        if scheduled != set(tick_ids):
            self.fail(f"t.tick executions {len(scheduled)} vs started ticks {len(tick_ids)}")
        for execution_id in scheduled:
            expected[execution_id] = ("t.tick", {})
            row = executions[execution_id]
            if row["status"] != "completed" or json.loads(row["result"]) != "ok":
                stuck += row["status"] in ACTIVE
                self.fail(f"tick execution {execution_id}: {row['status']}")
        unexplained = set(executions) - set(expected)
        if unexplained:
            self.fail(f"{len(unexplained)} executions nobody started: {sorted(unexplained)[:5]}")
        missed = 0
        for schedule_id, period in (("every-second", 1.0), ("every-minute", 60.0)):
            dues = [r["due_at"] for r in ticks if r["schedule_id"] == schedule_id]
            for earlier, later in itertools.pairwise(dues):
                if abs(later - earlier - period) > 1e-3:
                    missed += max(0, round((later - earlier) / period) - 1)
                    self.fail(f"schedule {schedule_id}: ticks {earlier} then {later}")
            if schedule_id == "every-second":
                # the grid reaches the pause (1 s period; slack for a slow last firing)
                if not dues or dues[-1] < paused_at - 10.0:
                    self.fail(f"schedule every-second: last tick {dues[-1] if dues else None}"
                              f" long before the pause at {paused_at}")
                if any(r["missed_count"] for r in runs):
                    self.fail("a schedule run records missed ticks")
            self.figures[f"ticks {schedule_id}"] = len(dues)

        # steps: each implied step committed and run >= 1 time; none ran after its commit
        rerun_uncommitted = 0
        committed_reruns = 0
        logged_steps = 0
        first_seen: dict[tuple[str, str], int] = {}
        for index, snapshot in enumerate(self.snapshots):
            for step in snapshot:
                first_seen.setdefault(step, index)
        implied: set[tuple[str, str]] = set()
        for execution_id, (workflow, data) in expected.items():
            if execution_id not in executions:
                continue
            for step_id in expected_steps(workflow, data):
                implied.add((execution_id, step_id))
        for step in sorted(implied):
            logged_steps += 1
            lines = log.get(step, [])
            row = steps_table.get(step)
            if row is None or row["completed_at"] is None:
                self.fail(f"step {step} is not committed")
            if not lines:
                self.fail(f"step {step} is committed but never ran (no log line)")
                continue
            if lines != sorted(lines) or len(set(lines)) != len(lines):
                self.fail(f"step {step} ran twice in one incarnation: {lines}")
            rerun_uncommitted += len(lines) - 1
            seen = first_seen.get(step)
            if seen is not None and max(lines) > seen:
                committed_reruns += 1
                self.fail(f"step {step} committed by incarnation <= {seen} ran again in "
                          f"{[i for i in lines if i > seen]}")
        # steps are sequential in every workflow here: an execution moves on only once a step
        # is committed, so one incarnation leaves at most one run per execution to repeat
        repeated_per_run: dict[tuple[str, int], list[str]] = {}
        for (execution_id, step_id), lines in log.items():
            for incarnation in lines[:-1]:
                repeated_per_run.setdefault((execution_id, incarnation), []).append(step_id)
        for (execution_id, incarnation), step_ids in sorted(repeated_per_run.items()):
            if len(step_ids) > 1:
                self.fail(f"{execution_id} moved past an uncommitted step in incarnation "
                          f"{incarnation}: {step_ids} all ran again")
        phantom = set(log) - implied
        for step in sorted(phantom)[:10]:
            self.fail(f"log names a step no input implies: {step}")
        # compensations ran in reverse order
        lines_in_order = [tuple(line.split(" ", 2)[1:]) for line in
                          self.layout.log.read_text().splitlines()]
        for execution_id, (workflow, data) in expected.items():
            if workflow == "t.comp" and data["fail"]:
                positions_b = [i for i, s in enumerate(lines_in_order)
                               if s == (execution_id, "rollback:b")]
                positions_a = [i for i, s in enumerate(lines_in_order)
                               if s == (execution_id, "rollback:a")]
                if positions_a and positions_b and max(positions_b) > min(positions_a):
                    self.fail(f"{execution_id}: rollback:a ran before rollback:b finished")

        # signals: every sent signal stored once and consumed; received in order
        consumed_ok = buffered = 0
        for execution_id, payloads in sent.items():
            rows = conn.execute("SELECT payload, consumed_by FROM signals WHERE execution_id = ?"
                                " ORDER BY seq", (execution_id,)).fetchall()
            stored = [json.loads(r["payload"]) for r in rows]
            if sorted(map(json.dumps, stored)) != sorted(map(json.dumps, payloads)):
                self.fail(f"signals of {execution_id}: stored {stored}, sent {payloads}")
            unconsumed = [r for r in rows if r["consumed_by"] is None]
            row = executions.get(execution_id)
            result = json.loads(row["result"]) if row is not None and row["result"] else None
            if isinstance(result, dict) and result.get("kind") == "timeout":
                # a race the time-out won: the signal stays buffered, unconsumed, not lost
                if len(unconsumed) != len(rows):
                    self.fail(f"{execution_id} timed out but consumed its signal")
                buffered += len(unconsumed)
            elif unconsumed:
                self.fail(f"{len(unconsumed)} signals of {execution_id} never consumed")
            consumed_ok += len(rows) - len(unconsumed)

        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            self.fail(f"integrity_check: {integrity}")
        self.figures.update({
            "kills survived": self.kills,
            "of which during start-up (`daemon run`, maybe before ready)": self.early_kills,
            "executions": len(expected),
            "executions started by the driver": len(starts),
            "idempotent starts repeated": repeated_keys,
            "steps (implied, checked)": logged_steps,
            "step runs logged": sum(len(v) for v in log.values()),
            "re-runs of uncommitted steps (allowed)": rerun_uncommitted,
            "committed steps run again": committed_reruns,
            "signals sent": len(sends),
            "signal sends retried after an error": resent,
            "driver calls that raised (retried)": self.driver_errors(),
            "signals consumed": consumed_ok,
            "signal/time-out races won by the time-out (signal kept)": races_lost,
            "signals left buffered by those": buffered,
            "schedule ticks": len(ticks),
            "missed ticks": missed,
            "lost": lost,
            "stuck": stuck,
            "wrong results": wrong,
            "duplicate executions per key": duplicates,
            "integrity": integrity,
            "violations": len(self.violations),
        })

    def driver_errors(self) -> int:
        return sum(1 for line in self.layout.journal.read_text().splitlines()
                   if json.loads(line)["op"] == "error")

    @staticmethod
    def expected_result(workflow: str, data: dict[str, Any], payloads: list[Any]) -> Any:
        if workflow == "t.steps":
            return {"steps": data["n"]}
        if workflow == "t.signals":
            return payloads
        if workflow == "t.maybe":
            if data["send"]:
                return {"kind": "signal", "payload": payloads[0] if payloads else None}
            return {"kind": "timeout", "payload": None}
        if workflow == "t.comp":
            return "rolled_back" if data["fail"] else "done"
        if workflow == "t.idem":
            return data["key"]
        return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.torture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="torture", choices=["torture", "drive"])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-ms", type=int, default=50)
    parser.add_argument("--max-ms", type=int, default=400)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--driver-busy-ms", type=int, default=50,
                        help="the driver's SQLite busy time-out (short: some of its calls fail)")
    parser.add_argument("--early", type=float, default=0.25,
                        help="the share of kills aimed at any instant of a `daemon run` start-up")
    parser.add_argument("--keep", action="store_true", help="keep the folder of the run")
    parser.add_argument("--synchronous", default="FULL", type=str.upper,
                        choices=["FULL", "NORMAL"],
                        help="the daemon's level (a kill -9 loses nothing committed at either; "
                             "at NORMAL the daemon commits on its event loop)")
    args = parser.parse_args(argv)
    if args.mode == "drive":
        return drive(args.dir, args.seed, args.driver_busy_ms)
    base = args.dir or Path(tempfile.mkdtemp(prefix="durable-torture-"))
    base.mkdir(parents=True, exist_ok=True)
    torture = Torture(Layout(base, args.synchronous), args.kills, args.seed, args.min_ms,
                      args.max_ms, args.driver_busy_ms, args.early)
    code = 1
    try:
        code = torture.run()
    except Exception as exc:  # reported as a failed run
        print(f"torture run failed: {exc!r}", flush=True)
        code = 1
    finally:
        torture.cleanup()
    print(textwrap.dedent(f"""\
        crash torture: seed {args.seed}, {args.kills} kills, {args.min_ms}-{args.max_ms} ms,
        synchronous={args.synchronous},
        folder {base}{'' if args.keep or code else ' (removed)'}"""))
    for name, value in torture.figures.items():
        print(f"  {name:<42} {value}")
    print(json.dumps({"torture": torture.figures, "ok": code == 0}))
    if not args.keep and code == 0:
        shutil.rmtree(base, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
