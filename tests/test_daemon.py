"""The daemon as real processes (SPEC §5, DESIGN-NOTES §4-5): ``durablectl daemon start`` in a
subprocess on a database and a folder of workflow modules in ``tmp_path``.

Every test runs in its own XDG state/config/data/runtime dirs, so pid, log and socket files never
touch the user's, and every daemon a test started is stopped (then killed if it lingers) at the
end whatever happened. Waits are on conditions with generous time-outs, never fixed sleeps (the
idle-CPU window excepted).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durablectl import DurableClient, SqliteStore
from durablectl.daemon.ipc import nudge
from durablectl.daemon.paths import daemon_paths
from durablectl.daemon.process import socket_for

ROOT = Path(__file__).resolve().parent.parent
DURABLECTL = ROOT / ".venv" / "bin" / "durablectl"
TIMEOUT = 10.0  # generous: every condition here is met in well under a second on a quiet box

pytestmark = pytest.mark.skipif(not DURABLECTL.exists(), reason="needs `make install`")

# A generic module: each workflow takes the files it touches from its input, so tests stay
# declarative. ``log`` gets one line per real run of a step body (replays add nothing).
BASIC = '''
import time
from pathlib import Path

from durablectl import Signal, workflow

Go = Signal("go")


def _touch(path, line):
    with open(path, "a") as handle:
        handle.write(line + "\\n")


def _block_until(path):
    while not Path(path).exists():
        time.sleep(0.02)
    return "released"


@workflow("t.signal.v1")
async def with_signal(ctx, data: dict) -> dict:
    first = await ctx.step("first", lambda: data["x"] + 1)
    got = await ctx.wait_for_signal(Go, step_id="go")
    return {"first": first, "got": got}


@workflow("t.crash.v1")
async def crash(ctx, data: dict) -> dict:
    a = await ctx.step("a", lambda: (_touch(data["log"], "a"), "a-done")[1])
    b = await ctx.step("b", lambda: (_touch(data["log"], "b"), _block_until(data["release"]))[1])
    c = await ctx.step("c", lambda: (_touch(data["log"], "c"), "c-done")[1])
    return {"a": a, "b": b, "c": c}


@workflow("t.slow.v1")
async def slow(ctx, data: dict) -> dict:
    def body():
        _touch(data["log"], "slow-started")
        time.sleep(data["seconds"])
        _touch(data["log"], "slow-finished")
        return "slow-done"

    return {"slow": await ctx.step("slow", body)}
'''


def version_module(workflow_id: str, value: str) -> str:
    return textwrap.dedent(f'''
        from durablectl import workflow


        @workflow("{workflow_id}")
        async def versioned(ctx, data) -> str:
            return await ctx.step("value", lambda: "{value}")
    ''')


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {timeout:g}s: {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not): the daemon's own check."""
    from durablectl.daemon.process import process_alive

    return process_alive(pid)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b"durablectl"  # no /proc: trust the pid


class DaemonHarness:
    """One test's database, config, workflow folder and daemons."""

    def __init__(self, tmp_path: Path, runtime: Path) -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "durable.db"
        self.workflows = tmp_path / "workflows"
        self.workflows.mkdir()
        self.config = tmp_path / "durablectl.toml"
        self.write_config()
        # as users run it: bytecode caching on (a stale .pyc must never hide an edit)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("DURABLECTL_") and k != "PYTHONDONTWRITEBYTECODE"}
        for name, folder in (("XDG_STATE_HOME", tmp_path / "state"),
                             ("XDG_CONFIG_HOME", tmp_path / "config"),
                             ("XDG_DATA_HOME", tmp_path / "data"),
                             ("XDG_RUNTIME_DIR", runtime)):
            folder.mkdir(mode=0o700, exist_ok=True)
            self.env[name] = str(folder)
        self.pids: set[int] = set()
        self._store: SqliteStore | None = None

    # files ------------------------------------------------------------------------------------
    def write_config(self, extra: str = "", daemon: str = "grace_seconds = 5") -> None:
        self.config.write_text(f'workflows = "workflows"\n{extra}\n[daemon]\n{daemon}\n')

    def write_module(self, name: str, source: str, *, keep_mtime: bool = False) -> Path:
        """Write atomically, so the watcher never imports half a file. ``keep_mtime``: the
        new file gets the old one's modification time (an edit within the same second)."""
        path = self.workflows / f"{name}.py"
        old = path.stat() if keep_mtime else None
        scratch = self.tmp / f".{name}.py.tmp"
        scratch.write_text(source)
        if old is not None:
            os.utime(scratch, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(scratch, path)
        return path

    # the command line -------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DURABLECTL), *args, "--db", str(self.db),
                               "--config", str(self.config)],
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.tmp)

    def start(self) -> int:
        done = self.cli("daemon", "start", "--json")
        assert done.returncode == 0, done.stderr
        pid = int(json.loads(done.stdout)["pid"])
        self.pids.add(pid)
        return pid

    def status(self) -> dict[str, Any]:
        done = self.cli("daemon", "status", "--json")
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.cli("daemon", "stop", timeout=60)

    def cleanup(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        with contextlib.suppress(Exception):
            self.stop()
        for pid in self.pids:
            if pid_alive(pid) and b"durablectl" in _cmdline(pid):  # never a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # the library side -------------------------------------------------------------------------
    @property
    def store(self) -> SqliteStore:
        if self._store is None:
            self._store = SqliteStore(self.db)
        return self._store

    def client(self) -> DurableClient:
        return DurableClient(self.store)

    def nudge(self) -> None:
        nudge(socket_for(str(self.db), self.store))

    def start_execution(self, workflow_id: str, data: Any = None) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no worker is running" when none is, on purpose
            execution_id = self.client().start_execution(workflow_id, data)
        self.nudge()
        return execution_id

    def signal(self, execution_id: str, signal_id: str, payload: Any = None) -> None:
        self.client().signal(execution_id, signal_id, payload)
        self.nudge()

    def execution(self, execution_id: str) -> Any:
        return self.store.get_execution(execution_id)

    def wait_status(self, execution_id: str, *statuses: str, timeout: float = TIMEOUT) -> Any:
        return wait_until(
            lambda: (e := self.execution(execution_id)) is not None and e.status in statuses
            and e, f"execution {execution_id} in {statuses}", timeout)

    def log_text(self) -> str:
        path = Path(self.status()["log_file"])
        return path.read_text() if path.exists() else ""


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonHarness]:
    # a short runtime dir keeps the socket path under its limit whatever pytest's tmp name is
    runtime = Path(tempfile.mkdtemp(prefix="dctl-"))
    harness = DaemonHarness(tmp_path, runtime)
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, harness.env[name])  # the test process computes the same paths
    monkeypatch.delenv("DURABLECTL_DB", raising=False)
    monkeypatch.delenv("DURABLECTL_CONFIG", raising=False)
    try:
        yield harness
    finally:
        harness.cleanup()
        shutil.rmtree(runtime, ignore_errors=True)


# -- start, status, stop -----------------------------------------------------------------------
def test_start_returns_ready_and_status_reports_the_daemon(daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    pid = daemon.start()
    # ready means ready: the socket answers at once, workflows are loaded and recorded
    status = daemon.status()
    assert status["pid"] == pid
    assert os.path.realpath(status["database"]) == os.path.realpath(daemon.db)
    assert status["workflows"] == ["t.crash.v1", "t.signal.v1", "t.slow.v1"]
    assert isinstance(status["uptime_s"], int | float) and status["uptime_s"] >= 0
    assert status["executions"] == {}
    assert status["next_due"] is None
    assert set(daemon.store.known_workflows()) == set(status["workflows"])
    socket = socket_for(str(daemon.db), daemon.store)
    assert socket is not None and len(os.fsencode(socket)) < 100
    assert str(socket) == status["socket"]
    pid_file = daemon_paths(daemon.db).pid_file
    assert pid_file.read_text().strip() == str(pid)
    for private in (socket, Path(status["log_file"]), pid_file):
        assert os.stat(private).st_mode & 0o777 == 0o600, private
    # recorded in the database too, for clients run with another environment (cron, sudo)
    assert daemon.store.get_meta("daemon.pid") == str(pid)
    assert daemon.store.get_meta("daemon.socket") == str(socket)

    plain = daemon.cli("daemon", "status")
    assert plain.returncode == 0 and str(pid) in plain.stdout

    stopped = daemon.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(pid)  # stop returns once the process is gone, not just its lock
    assert not socket.exists()
    assert daemon.store.get_meta("daemon.pid") is None
    assert daemon.store.get_meta("daemon.socket") is None


def test_run_in_the_foreground_logs_to_stderr_and_stops_on_sigterm(
        daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    stderr = daemon.tmp / "run.stderr"
    with open(stderr, "wb") as sink:
        proc = subprocess.Popen([str(DURABLECTL), "daemon", "run", "--db", str(daemon.db),
                                 "--config", str(daemon.config)], env=daemon.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=sink)
    daemon.pids.add(proc.pid)
    try:
        wait_until(lambda: daemon.cli("daemon", "status").returncode == 0, "the daemon ready")
        assert daemon.status()["pid"] == proc.pid
        execution_id = daemon.start_execution("t.signal.v1", {"x": 1})
        daemon.wait_status(execution_id, "waiting")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stderr.read_text()
    assert f"daemon {proc.pid} ready" in log and f"daemon {proc.pid} stopped" in log
    assert daemon.cli("daemon", "status").returncode == 4


def test_a_second_daemon_on_the_same_database_is_refused(daemon: DaemonHarness) -> None:
    pid = daemon.start()
    for command in ("start", "run"):
        again = daemon.cli("daemon", command, timeout=30)
        assert again.returncode == 2, (command, again.stdout, again.stderr)
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert f"pid {pid}" in lines[0]
    assert daemon.status()["pid"] == pid  # the first one is untouched


def test_stop_and_status_without_a_daemon_exit_4(daemon: DaemonHarness) -> None:
    for command in ("stop", "status"):
        done = daemon.cli("daemon", command)
        assert done.returncode == 4, (command, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
    # and after a daemon has come and gone
    daemon.start()
    assert daemon.stop().returncode == 0
    assert daemon.cli("daemon", "status").returncode == 4
    assert daemon.cli("daemon", "stop").returncode == 4


def test_bad_config_fails_start_with_one_line_naming_key_and_file(
        daemon: DaemonHarness) -> None:
    daemon.write_config(daemon="grace_seconds = 5\nconcurency = 3")
    done = daemon.cli("daemon", "start")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "concurency" in lines[0] and str(daemon.config) in lines[0]
    daemon.write_config()
    assert daemon.cli("daemon", "status").returncode == 4  # nothing was left running


# -- executions and signals from other processes -----------------------------------------------
def test_execution_and_signal_from_another_process_reach_the_workflow(
        daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    daemon.start()
    execution_id = daemon.start_execution("t.signal.v1", {"x": 41})
    daemon.wait_status(execution_id, "waiting")
    daemon.signal(execution_id, "go", {"by": "test"})
    done = daemon.wait_status(execution_id, "completed", "failed")
    assert done.status == "completed", done.error
    assert done.result == {"first": 42, "got": {"by": "test"}}
    assert daemon.status()["executions"] == {"completed": 1}


def test_a_lost_nudge_costs_latency_not_correctness(daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    daemon.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        execution_id = daemon.client().start_execution("t.signal.v1", {"x": 1})  # no nudge
    daemon.wait_status(execution_id, "waiting")
    daemon.client().signal(execution_id, "go", "quiet")  # no nudge either
    assert daemon.wait_status(execution_id, "completed").result == {"first": 2, "got": "quiet"}


def test_status_reports_the_bounded_caches_of_parked_executions(daemon: DaemonHarness) -> None:
    """A parked execution costs rows, not memory, beyond its share of ``cache_size``: the
    daemon's status says what its caches hold, and evicted executions still finish."""
    daemon.write_config(daemon="grace_seconds = 5\ncache_size = 2")
    daemon.write_module("basic", BASIC)
    daemon.start()
    ids = [daemon.start_execution("t.signal.v1", {"x": i}) for i in range(5)]
    for execution_id in ids:
        daemon.wait_status(execution_id, "waiting")
    cache = daemon.status()["cache"]
    assert cache["size"] == 2
    assert 0 < cache["histories"] <= 2
    assert cache["coroutines"] is None or cache["coroutines"] <= 2
    for i, execution_id in enumerate(ids):
        daemon.signal(execution_id, "go", i)
    for i, execution_id in enumerate(ids):
        assert daemon.wait_status(execution_id, "completed").result == {"first": i + 1, "got": i}


# -- module loading ----------------------------------------------------------------------------
def test_changed_and_new_modules_are_reloaded_without_a_restart(daemon: DaemonHarness) -> None:
    daemon.write_module("versioned", version_module("t.versioned.v1", "one"))
    pid = daemon.start()
    first = daemon.start_execution("t.versioned.v1")
    assert daemon.wait_status(first, "completed").result == "one"

    daemon.write_module("extra", version_module("t.extra.v1", "extra"))
    wait_until(lambda: "t.extra.v1" in daemon.status()["workflows"], "the new module loaded")
    extra = daemon.start_execution("t.extra.v1")
    assert daemon.wait_status(extra, "completed").result == "extra"

    # an edit of the same size and modification time (within the same second) is seen too:
    # the bytecode cache, keyed on both, must not hide it
    marked = '\n@workflow("t.versioned.marker.v{}")\nasync def marker(ctx, d): pass\n'
    daemon.write_module("versioned", version_module("t.versioned.v1", "two") + marked.format(1))
    wait_until(lambda: "t.versioned.marker.v1" in daemon.status()["workflows"], "the edit")
    second = daemon.start_execution("t.versioned.v1")
    assert daemon.wait_status(second, "completed").result == "two"
    daemon.write_module("versioned", version_module("t.versioned.v1", "six") + marked.format(2),
                        keep_mtime=True)
    wait_until(lambda: "t.versioned.marker.v2" in daemon.status()["workflows"], "the 2nd edit")
    third = daemon.start_execution("t.versioned.v1")
    assert daemon.wait_status(third, "completed").result == "six"

    (daemon.workflows / "extra.py").unlink()
    wait_until(lambda: "t.extra.v1" not in daemon.status()["workflows"], "the module removed")
    assert daemon.status()["pid"] == pid  # all of it without a restart
    assert not list(daemon.workflows.rglob("*.pyc"))  # no bytecode written beside user code


def test_a_workflows_folder_created_or_recreated_later_is_loaded(
        daemon: DaemonHarness) -> None:
    shutil.rmtree(daemon.workflows)
    daemon.start()  # a missing folder is a warning, not a failure
    assert daemon.status()["workflows"] == []
    daemon.workflows.mkdir()
    daemon.write_module("versioned", version_module("t.versioned.v1", "late"))
    wait_until(lambda: daemon.status()["workflows"] == ["t.versioned.v1"], "the folder loaded")

    shutil.rmtree(daemon.workflows)  # a removed folder unloads its modules...
    wait_until(lambda: daemon.status()["workflows"] == [], "the folder unloaded")
    daemon.workflows.mkdir()  # ...and is watched again once it is back
    daemon.write_module("versioned", version_module("t.versioned.v1", "again"))
    wait_until(lambda: daemon.status()["workflows"] == ["t.versioned.v1"], "the folder back")
    execution_id = daemon.start_execution("t.versioned.v1")
    assert daemon.wait_status(execution_id, "completed").result == "again"


def test_an_import_error_is_logged_with_file_and_line_and_keeps_the_previous_version(
        daemon: DaemonHarness) -> None:
    path = daemon.write_module("versioned", version_module("t.versioned.v1", "good"))
    daemon.start()
    broken = version_module("t.versioned.v1", "bad") + "\n\nraise RuntimeError('deploy typo')\n"
    line = broken.splitlines().index("raise RuntimeError('deploy typo')") + 1
    daemon.write_module("versioned", broken)
    wait_until(lambda: daemon.status()["load_errors"], "the import error reported")
    (error,) = daemon.status()["load_errors"]
    assert f"{path}:{line}" in error and "deploy typo" in error
    log = wait_until(lambda: (t := daemon.log_text()) and f"{path}:{line}" in t and t,
                     "the import error logged")
    assert "RuntimeError" in log

    # the previous definition is still loaded, recorded, and runs
    status = daemon.status()
    assert "t.versioned.v1" in status["workflows"]
    execution_id = daemon.start_execution("t.versioned.v1")
    assert daemon.wait_status(execution_id, "completed").result == "good"

    # a syntax error too, and fixing the file clears the error
    daemon.write_module("versioned", "from durablectl import workflow\n\ndef oops(:\n")
    wait_until(lambda: any(f"{path}:3" in e and "SyntaxError" in e
                           for e in daemon.status()["load_errors"]), "the syntax error")
    daemon.write_module("versioned", version_module("t.versioned.v1", "fixed"))
    wait_until(lambda: not daemon.status()["load_errors"], "the error cleared")
    fixed = daemon.start_execution("t.versioned.v1")
    assert daemon.wait_status(fixed, "completed").result == "fixed"


def test_an_execution_of_a_workflow_not_loaded_stays_pending_with_a_reason(
        daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    # stored before any worker recorded its workflows: accepted, it waits for a worker
    early = daemon.start_execution("t.later.v1", {"n": 1})
    daemon.start()
    pending = wait_until(
        lambda: (e := daemon.execution(early)) and e.status_reason and e,
        "a status reason on the unloaded execution")
    assert pending.status == "pending"
    assert pending.status_reason.startswith("workflow not loaded")
    assert "t.later.v1" in pending.status_reason

    # a module removed while the daemon runs: new executions of it wait too, and are not failed
    daemon.write_module("gone", version_module("t.gone.v1", "back"))
    wait_until(lambda: "t.gone.v1" in daemon.status()["workflows"], "t.gone.v1 loaded")
    (daemon.workflows / "gone.py").unlink()
    wait_until(lambda: "t.gone.v1" not in daemon.status()["workflows"], "t.gone.v1 unloaded")
    orphan = daemon.start_execution("t.gone.v1")
    waiting = wait_until(lambda: (e := daemon.execution(orphan)) and e.status_reason and e,
                         "a status reason on the orphan")
    assert waiting.status == "pending"
    assert waiting.status_reason.startswith("workflow not loaded")

    # once a module brings the workflows, both run
    daemon.write_module("later", version_module("t.later.v1", "late"))
    daemon.write_module("gone", version_module("t.gone.v1", "back"))
    assert daemon.wait_status(early, "completed").result == "late"
    assert daemon.wait_status(orphan, "completed").result == "back"


# -- crashes and stopping ----------------------------------------------------------------------
def test_a_killed_daemon_resumes_on_restart_without_rerunning_completed_steps(
        daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    log, release = daemon.tmp / "steps.log", daemon.tmp / "release"
    pid = daemon.start()
    execution_id = daemon.start_execution("t.crash.v1", {"log": str(log),
                                                         "release": str(release)})
    wait_until(lambda: log.exists() and log.read_text().splitlines() == ["a", "b"],
               "step b running")
    wait_until(lambda: [s.step_id for s in daemon.store.list_step_results(execution_id)]
               == ["a"], "step a committed")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), "the daemon dead")
    assert daemon.execution(execution_id).status == "running"  # as the crash left it

    second = daemon.start()
    assert second != pid
    wait_until(lambda: log.read_text().splitlines() == ["a", "b", "b"], "step b run again")
    release.touch()
    done = daemon.wait_status(execution_id, "completed", "failed")
    assert done.status == "completed", done.error
    assert done.result == {"a": "a-done", "b": "released", "c": "c-done"}
    # a ran once; b, whose result was never committed, ran again (at-least-once); c once
    assert log.read_text().splitlines() == ["a", "b", "b", "c"]
    assert done.attempt == 1  # a crash is not an attempt


def test_stop_lets_a_running_step_finish_within_the_grace_period(daemon: DaemonHarness) -> None:
    daemon.write_config(daemon="grace_seconds = 5")
    daemon.write_module("basic", BASIC)
    log = daemon.tmp / "steps.log"
    pid = daemon.start()
    execution_id = daemon.start_execution("t.slow.v1", {"log": str(log), "seconds": 1.0})
    wait_until(lambda: log.exists() and "slow-started" in log.read_text(), "the step running")
    began = time.monotonic()
    stopped = daemon.stop()
    took = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stderr
    assert took < 5 + 5  # within the grace period (plus the CLI's start-up), generously
    assert not pid_alive(pid)
    assert log.read_text().splitlines() == ["slow-started", "slow-finished"]
    done = daemon.execution(execution_id)
    assert done.status == "completed" and done.result == {"slow": "slow-done"}


def test_stop_cancels_a_step_that_outlives_the_grace_period(daemon: DaemonHarness) -> None:
    daemon.write_config(daemon="grace_seconds = 0.5")
    daemon.write_module("basic", BASIC)
    log, release = daemon.tmp / "steps.log", daemon.tmp / "release"
    pid = daemon.start()
    execution_id = daemon.start_execution("t.crash.v1", {"log": str(log),
                                                         "release": str(release)})
    wait_until(lambda: log.exists() and log.read_text().splitlines() == ["a", "b"],
               "step b running")
    stopped = daemon.stop()  # b blocks in a thread that cannot be interrupted
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not pid_alive(pid), "the daemon gone")
    left = daemon.execution(execution_id)
    assert left.status in ("pending", "running") and left.lease_owner is None

    # the next daemon runs it on from its history
    release.touch()
    daemon.start()
    done = daemon.wait_status(execution_id, "completed", "failed")
    assert done.status == "completed", done.error
    assert log.read_text().splitlines() == ["a", "b", "b", "c"]


def test_the_daemon_stops_when_its_database_file_is_deleted(daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    pid = daemon.start()
    log_file = Path(daemon.status()["log_file"])
    daemon.store.close()
    daemon._store = None
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{daemon.db}{suffix}")
    wait_until(lambda: not pid_alive(pid), "the daemon stopped", timeout=15)
    assert daemon.cli("daemon", "status").returncode == 4
    assert not daemon.db.exists()  # and it wrote nothing more: no new file in its place
    assert "was deleted or replaced" in log_file.read_text()


# -- idle ----------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process, in clock ticks (10 ms on most kernels)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_ns(pid: int) -> int | None:
    """Time on CPU of every thread, in nanoseconds (schedstat), for a finer report."""
    try:
        return sum(int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
                   for task in os.listdir(f"/proc/{pid}/task"))
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_an_idle_daemon_uses_no_measurable_cpu(daemon: DaemonHarness) -> None:
    daemon.write_module("basic", BASIC)
    pid = daemon.start()
    execution_id = daemon.start_execution("t.signal.v1", {"x": 1})
    daemon.wait_status(execution_id, "waiting")  # one parked execution: idle, not empty
    window = 3.0
    before, before_ns, began = _cpu_seconds(pid), _cpu_ns(pid), time.monotonic()
    time.sleep(window)  # the one fixed sleep: the window being measured
    used, after_ns = _cpu_seconds(pid) - before, _cpu_ns(pid)
    elapsed = time.monotonic() - began
    share = used / elapsed
    fine = "" if before_ns is None or after_ns is None else \
        f" (schedstat: {(after_ns - before_ns) / 1e9 / elapsed:.3%})"
    print(f"\nidle daemon CPU: {used * 1000:.0f} ms over {elapsed:.2f} s = {share:.2%} of a "
          f"core{fine}")
    assert share < 0.03  # generous: the target is < 1%


DECLARED = '''
from durablectl import every, workflow

@workflow("t.declared.v1"{schedule})
async def declared(ctx, data):
    return "tick"
'''


def test_a_removed_schedule_declaration_pauses_the_schedule_on_reload(
        daemon: DaemonHarness) -> None:
    daemon.write_module("declared", DECLARED.format(schedule=", schedule=every(3600)"))
    daemon.start()
    schedule = daemon.store.get_schedule("t.declared.v1")
    assert schedule is not None and schedule.status == "active" and schedule.declared

    daemon.write_module("declared", DECLARED.format(schedule=""))  # declaration removed
    wait_until(lambda: daemon.store.get_schedule("t.declared.v1").status == "paused",
               "the undeclared schedule paused")
    paused = daemon.store.get_schedule("t.declared.v1")
    assert paused.paused_reason == "undeclared"  # paused, not deleted
    wait_until(lambda: "t.declared.v1 paused" in daemon.log_text(), "the log line")

    daemon.write_module("declared", DECLARED.format(schedule=", schedule=every(3600)"))
    wait_until(lambda: daemon.store.get_schedule("t.declared.v1").status == "active",
               "the schedule resumed when declared again")
