"""Security rules (SPEC §8): payloads are JSON only and nothing read from the database is
evaluated or unpickled; the database, its lock files and the daemon's pid, log and socket files
are the user's alone; the daemon refuses a database or workflows folder that other users can
write; payloads and errors never reach a terminal as escape sequences.

The dashboard's rules (token on every route, constant-time comparison, CSRF, loopback binding,
escaped payloads and errors) are tested in tests/test_dashboard.py."""

from __future__ import annotations

import ast
import json
import os
import stat
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from durablectl import DurableClient, SqliteStore
from durablectl.cli.app import app
from durablectl.cli.core import Session
from durablectl.model import ErrorInfo

from .test_daemon import BASIC, DaemonHarness, daemon  # noqa: F401 - a fixture

PACKAGE = Path(__file__).resolve().parent.parent / "durablectl"

# -- nothing is evaluated or unpickled ---------------------------------------------------------
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                     "jsonpickle", "yaml", "copyreg"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__", "execfile"}
# The one place that runs code by design: the loader imports the user's workflow modules from
# the workflows folder (files, never database contents): compile() of a file's source and
# importlib's exec_module, both in durablectl/daemon/loader.py.
ALLOWED = {("daemon/loader.py", "compile"), ("daemon/loader.py", "exec_module")}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _called_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def test_the_package_never_imports_a_deserialiser_that_runs_code() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and _called_name(node) == "import_module" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            found += [f"{path.relative_to(PACKAGE)}:{node.lineno} {name}" for name in names
                      if name.split(".")[0] in FORBIDDEN_MODULES]
    assert found == []


def test_the_package_never_evaluates_text_and_runs_code_only_in_the_loader() -> None:
    found = []
    for path in _modules():
        where = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            if name == "compile" and not isinstance(node.func, ast.Name):
                continue  # re.compile and the like; the builtin is called by its bare name
            if name in FORBIDDEN_CALLS or (
                    name in ("compile", "exec_module", "literal_eval", "run_path", "run_module")
                    and (where, name) not in ALLOWED):
                found.append(f"{where}:{node.lineno} {name}()")
    assert found == []
    loader = (PACKAGE / "daemon" / "loader.py").read_text()
    assert 'compile(source, self.path, "exec"' in loader  # a file's source, nothing else


def test_payloads_are_stored_as_plain_json_text(tmp_path: Path) -> None:
    import sqlite3

    with SqliteStore(tmp_path / "s.db") as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eid = DurableClient(store).start_execution("any.v1", {"k": ["v", 1]})
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        (raw,) = conn.execute("SELECT input FROM executions WHERE execution_id = ?",
                              (eid,)).fetchone()
    finally:
        conn.close()
    assert json.loads(raw) == {"k": ["v", 1]}


# -- file modes --------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_database_lock_pid_log_and_socket_files_are_the_users_alone(
        daemon: DaemonHarness) -> None:  # noqa: F811 - the fixture
    daemon.write_module("basic", BASIC)
    daemon.start()
    status = daemon.status()
    execution_id = daemon.start_execution("t.signal.v1", {"x": 1})
    daemon.wait_status(execution_id, "waiting")
    db = daemon.db
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(status["log_file"])]
    workers = Path(f"{db}.workers")
    files += sorted(workers.iterdir())
    assert len(files) > 4, "no worker lock file"
    from durablectl.daemon.paths import daemon_paths

    paths = daemon_paths(db)
    files += [paths.pid_file]
    modes = {str(f): oct(mode(f)) for f in files if mode(f) & 0o077}
    assert modes == {}
    folders = [workers, paths.pid_file.parent, Path(status["log_file"]).parent,
               paths.socket.parent]
    assert {str(f): oct(mode(f)) for f in folders if mode(f) != 0o700} == {}
    assert stat.S_ISSOCK(os.lstat(paths.socket).st_mode)
    assert mode(paths.socket) & 0o077 == 0, oct(mode(paths.socket))


@pytest.mark.parametrize("target", ["database", "database folder", "workflows folder"])
def test_the_daemon_refuses_a_database_or_workflows_folder_others_can_write(
        daemon: DaemonHarness, target: str) -> None:  # noqa: F811 - the fixture
    daemon.write_module("basic", BASIC)
    with SqliteStore(daemon.db):
        pass  # the database exists
    path = {"database": daemon.db, "database folder": daemon.db.parent,
            "workflows folder": daemon.workflows}[target]
    old = mode(path)
    path.chmod(0o666 if target == "database" else 0o777)
    try:
        done = daemon.cli("daemon", "start")
    finally:
        path.chmod(old)
    assert (done.returncode, done.stdout) == (2, ""), done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    wanted = "0666" if target == "database" else "0777"
    assert lines[0] == (f"error: refusing to serve {daemon.db.resolve()}: the {target} "
                        f"{path.resolve()} is writable by other users (mode {wanted}); "
                        f"chmod go-w {path.resolve()}")
    assert daemon.cli("daemon", "status").returncode == 4  # nothing was left running
    daemon.start()  # once fixed it starts


def test_group_writable_is_refused_too_and_run_in_the_foreground_says_why(
        daemon: DaemonHarness) -> None:  # noqa: F811 - the fixture
    daemon.workflows.chmod(0o775)
    try:
        done = daemon.cli("daemon", "run", timeout=30)
    finally:
        daemon.workflows.chmod(0o755)
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines()[-1].startswith("error: refusing to serve ")
    assert "is writable by other users (mode 0775)" in done.stderr


# -- terminal escapes --------------------------------------------------------------------------
ESCAPES = ["\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\x9b2J", "bell\x07", "cr\rback"]
NASTY = "".join(ESCAPES)


def _seed(db: Path) -> str:
    """An execution whose input, step result, step error and own error carry escapes."""
    now = time.time()
    with SqliteStore(db) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eid = DurableClient(store).start_execution("esc.v1", {"in": NASTY})
        assert store.claim_execution(eid, worker_id="w", workflow_ids=["esc.v1"], now=now,
                                     real_now=now, lease_until=now + 30)
        error = ErrorInfo(type="Boom" + NASTY, message="bad " + NASTY,
                          traceback="Traceback\n  " + NASTY + "\n")
        store.record_step(execution_id=eid, worker_id="w", step_id="ok" + NASTY, kind="step",
                          result_json=json.dumps(NASTY, ensure_ascii=False), error=None,
                          attempt=1, started_at=now, completed_at=now, now=now,
                          audit_entries=[("step_completed", {"step_id": "ok" + NASTY,
                                                             "internal": False})])
        store.record_step(execution_id=eid, worker_id="w", step_id="bad" + NASTY, kind="step",
                          result_json=None, error=error, attempt=1, started_at=now,
                          completed_at=now, now=now,
                          audit_entries=[("step_completed", {"step_id": "bad" + NASTY,
                                                             "internal": False,
                                                             "error": "Boom" + NASTY})])
        assert store.finish(execution_id=eid, worker_id="w", status="failed", result_json=None,
                            error=error, reason="why " + NASTY, now=now)
    return eid


@pytest.mark.parametrize("output", ["plain", "rich"])
@pytest.mark.parametrize("command", ["show", "status", "list", "wait"])
def test_payloads_and_errors_never_reach_the_terminal_as_escapes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, command: str) -> None:
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("NO_COLOR", "1")  # rich's own styles stay out: any ESC is the payload's
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "esc.db"
    eid = _seed(db)
    monkeypatch.setattr(Session, "mode", property(lambda self: "json" if self.json else output))
    args = [command] if command == "list" else [command, eid]
    result = CliRunner().invoke(app, [*args, "--db", str(db)], catch_exceptions=False)
    shown: Any = result.stdout + result.stderr
    assert result.exit_code == (1 if command == "wait" else 0), shown
    for raw in ("\x1b", "\x9b", "\x07", "\r"):
        assert raw not in shown, (raw, shown)
    if command in ("show", "status", "wait"):
        assert "\\x1b[31mred" in shown  # still readable, as an escape


def test_the_dashboard_compares_secrets_in_constant_time_only() -> None:
    """No ``==`` on a token, digest, signature or CSRF value: hmac.compare_digest only."""
    secret = ("token", "digest", "csrf", "mac", "secret")
    found = []
    for path in sorted((PACKAGE / "dashboard").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                    isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                text = ast.unparse(node).lower()
                operands = [ast.unparse(n).lower() for n in (node.left, *node.comparators)
                            if not (isinstance(n, ast.Name) and n.id.isupper())]  # a name
                if any(word in o for o in operands for word in secret) and \
                        "none" not in text and "''" not in text and '""' not in text:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []
    assert "hmac.compare_digest" in (PACKAGE / "dashboard" / "auth.py").read_text()
