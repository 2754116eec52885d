"""``DurableClient`` hands its writes to a live daemon (``durablectl.daemon.handoff``).

With a real daemon subprocess: starts, signals and cancels go through the socket (the client's
own store refuses every direct write in those tests), give the same executions and the same
errors as the direct path, and fall back to it when the daemon is gone. With a fake daemon (a
socket in a thread): a lost answer is never turned into a second write.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durablectl import DurableClient, SqliteStore
from durablectl.daemon.handoff import REDISCOVER_SECONDS, decode_error, encode_error
from durablectl.errors import (
    DurableError,
    ExecutionNotActive,
    ExecutionNotFound,
    PayloadError,
    StorageError,
    WorkflowNotFound,
)
from tests.test_daemon import BASIC, DURABLECTL, DaemonHarness, wait_until

pytestmark = pytest.mark.skipif(not DURABLECTL.exists(), reason="needs `make install`")

WRITES = ("create_execution", "append_signal", "signal_and_claim", "cancel_execution")


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonHarness]:
    runtime = Path(tempfile.mkdtemp(prefix="dctl-"))  # a short socket path
    daemon = DaemonHarness(tmp_path, runtime)
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, daemon.env[name])
    monkeypatch.delenv("DURABLECTL_DB", raising=False)
    monkeypatch.delenv("DURABLECTL_CONFIG", raising=False)
    daemon.write_module("basic", BASIC)
    try:
        yield daemon
    finally:
        daemon.cleanup()
        shutil.rmtree(runtime, ignore_errors=True)


def socket_only(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every direct write of this store instance fail: what succeeds went to the daemon."""
    for name in WRITES:
        def refuse(*_args: Any, _name: str = name, **_kwargs: Any) -> Any:
            raise AssertionError(f"direct write {_name} while a daemon runs")

        monkeypatch.setattr(store, name, refuse)


def direct_client(db: Path) -> DurableClient:
    """A client that never finds a daemon: the direct path, for comparison."""
    client = DurableClient(SqliteStore(db))
    client._handoff._database = None
    return client


def error_of(call: Callable[..., Any], *args: Any) -> DurableError:
    with pytest.raises(DurableError) as caught:
        call(*args)
    return caught.value


def same_error(a: DurableError, b: DurableError) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b) and a.exit_code == b.exit_code
    assert vars(a) == vars(b)


# -- a real daemon ----------------------------------------------------------------------------
def test_start_and_signal_go_through_the_daemon_with_the_same_outcome(
        harness: DaemonHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.start()
    store = SqliteStore(harness.db)
    socket_only(store, monkeypatch)
    client = DurableClient(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a daemon answered: no "no worker" warning
        handed = client.start_execution("t.signal.v1", {"x": 1})
        harness.wait_status(handed, "waiting")
        assert client.signal(handed, "go", {"v": 7}) == 1
    assert client.wait(handed, timeout=10) == {"first": 2, "got": {"v": 7}}

    direct = direct_client(harness.db)
    plain = direct.start_execution("t.signal.v1", {"x": 1})
    harness.nudge()
    harness.wait_status(plain, "waiting")
    assert direct.signal(plain, "go", {"v": 7}) == 1
    harness.nudge()
    assert direct.wait(plain, timeout=10) == {"first": 2, "got": {"v": 7}}

    a, b = store.get_execution(handed), store.get_execution(plain)
    assert a is not None and b is not None
    assert (a.workflow_id, a.status, a.result, a.input, a.attempt, a.max_attempts) == \
        (b.workflow_id, b.status, b.result, b.input, b.attempt, b.max_attempts)
    steps = [(s.step_id, s.kind, s.result) for s in store.list_step_results(handed)]
    assert steps == [(s.step_id, s.kind, s.result) for s in store.list_step_results(plain)]
    statuses = [e.data.get("to") for e in store.list_audit_entries(handed)
                if e.kind == "execution_status_changed"]
    assert statuses[0] == "pending" and statuses[-1] == "completed"
    store.close()
    direct.store.close()


def test_errors_from_the_daemon_are_those_of_the_direct_path(
        harness: DaemonHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.start()
    store = SqliteStore(harness.db)
    socket_only(store, monkeypatch)
    client, direct = DurableClient(store), direct_client(harness.db)
    finished = client.start_execution("t.crash.v1", {"log": str(harness.tmp / "log"),
                                                     "release": str(harness.tmp)})
    harness.wait_status(finished, "completed")

    for call in (lambda c: c.signal("nope", "go"), lambda c: c.cancel_execution("nope")):
        same_error(error_of(call, client), error_of(call, direct))
        assert isinstance(error_of(call, client), ExecutionNotFound)
    for call in (lambda c: c.signal(finished, "go", 1),
                 lambda c: c.cancel_execution(finished, "late")):
        error = error_of(call, client)
        assert isinstance(error, ExecutionNotActive) and error.exit_code == 2
        same_error(error, error_of(call, direct))
    # refused before anything is sent, as on the direct path
    same_error(error_of(lambda: client.start_execution("t.typo.v1")),
               error_of(lambda: direct.start_execution("t.typo.v1")))
    assert isinstance(error_of(lambda: client.start_execution("t.typo.v1")), WorkflowNotFound)
    small = DurableClient(store, max_payload_bytes=10)
    assert isinstance(error_of(lambda: small.start_execution("t.signal.v1", "x" * 50)),
                      PayloadError)
    # idempotency keys: the same id, through the daemon and directly
    first = client.start_execution("t.signal.v1", {"x": 1}, idempotency_key="k")
    assert client.start_execution("t.signal.v1", {"x": 2}, idempotency_key="k") == first
    assert direct.start_execution("t.signal.v1", {"x": 3}, idempotency_key="k") == first
    cancelled = client.cancel_execution(first, "enough")
    assert (cancelled.execution_id, cancelled.status) == (first, "cancelled")
    direct.store.close()
    store.close()


def test_concurrent_callers_share_batches_and_every_start_runs_once(
        harness: DaemonHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of one client: their calls go to the daemon in batches (starts and signals
    mixed, an error among them), and each gets its own answer."""
    harness.start()
    store = SqliteStore(harness.db)
    socket_only(store, monkeypatch)
    client = DurableClient(store)
    results: dict[int, Any] = {}

    def caller(k: int) -> None:
        try:
            if k % 10 == 9:
                client.signal(f"missing-{k}", "go")
            execution_id = client.start_execution("t.signal.v1", {"x": k})
            harness.wait_status(execution_id, "waiting")
            client.signal(execution_id, "go", k)
            results[k] = client.wait(execution_id, timeout=20)
        except ExecutionNotFound as exc:
            results[k] = exc.execution_id

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {k: f"missing-{k}" if k % 10 == 9 else {"first": k + 1, "got": k}
                       for k in range(40)}
    assert store.count_executions() == {"completed": 36}
    store.close()


def test_the_client_writes_directly_when_the_daemon_is_gone_and_returns_to_it(
        harness: DaemonHarness) -> None:
    harness.start()
    client = DurableClient(SqliteStore(harness.db))
    first = client.start_execution("t.signal.v1", {"x": 1})  # keeps its connection
    harness.wait_status(first, "waiting")
    assert harness.stop().returncode == 0
    with pytest.warns(UserWarning, match="no worker is running"):
        queued = client.start_execution("t.signal.v1", {"x": 2})
    assert client.get_execution(queued).status == "pending"  # type: ignore[union-attr]
    with pytest.warns(UserWarning, match="no worker is running"):
        assert client.signal(first, "go", "later") == 1
    harness.start()
    time.sleep(REDISCOVER_SECONDS + 0.1)  # a client looks for a daemon again after a second
    original = client.store.create_execution
    client.store.create_execution = None  # type: ignore[assignment,method-assign]
    try:
        again = client.start_execution("t.signal.v1", {"x": 3})
    finally:
        client.store.create_execution = original  # type: ignore[method-assign]
    for eid in (queued, again):
        harness.wait_status(eid, "waiting")
    assert client.wait(first, timeout=10) == {"first": 2, "got": "later"}
    client.store.close()


# -- a fake daemon: lost answers --------------------------------------------------------------
class FakeDaemon:
    """A socket that reads each request and answers with ``reply`` (None: close at once)."""

    def __init__(self, path: Path, reply: dict[str, Any] | None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply = reply
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.requests.append(json.loads(data))
                    if self.reply is not None:
                        conn.sendall(json.dumps(self.reply).encode() + b"\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[dict[str, Any] | None], tuple[Any, Any]]]:
    made: list[Any] = []
    folder = Path(tempfile.mkdtemp(prefix="dctl-"))

    def make(reply: dict[str, Any] | None) -> tuple[FakeDaemon, DurableClient]:
        store = SqliteStore(tmp_path / "fake.db")
        path = folder / f"fake-{len(made)}.sock"
        daemon = FakeDaemon(path, reply)
        store.set_meta("daemon.socket", str(path))  # as a daemon records it
        made.append((daemon, store))
        return daemon, DurableClient(store)

    try:
        yield make
    finally:
        for daemon, store in made:
            daemon.close()
            store.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_start_whose_answer_is_lost_is_written_once(fake: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, client = fake(None)  # reads the request, dies without answering
    monkeypatch.setattr("durablectl.client.DurableClient._warn_without_workers",
                        lambda self, what: None)
    execution_id = client.start_execution("w.any", {"n": 1})
    assert [r["op"] for r in daemon.requests] == ["start"]
    assert daemon.requests[0]["execution_id"] == execution_id  # the id was drawn beforehand
    assert client.store.count_executions() == {"pending": 1}


def test_a_signal_whose_answer_is_lost_is_not_sent_twice(fake: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, client = fake(None)
    monkeypatch.setattr("durablectl.client.DurableClient._warn_without_workers",
                        lambda self, what: None)
    daemon.close()  # the start is written directly: nobody listens
    execution_id = client.start_execution("w.any")
    daemon, client = fake(None)
    with pytest.raises(StorageError, match="may or may not be stored"):
        client.signal(execution_id, "go", 1)
    assert len(daemon.requests) == 1


@pytest.mark.parametrize("reply", [{"closing": True},
                                   {"ok": False, "error": "unknown op 'start'"}])
def test_a_daemon_that_does_not_take_the_write_leaves_it_to_the_client(
        fake: Any, reply: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, client = fake(reply)  # stopping, or a daemon without the handoff
    monkeypatch.setattr("durablectl.client.DurableClient._warn_without_workers",
                        lambda self, what: None)
    execution_id = client.start_execution("w.any")
    assert client.signal(execution_id, "go", 1) == 1
    assert client.store.count_executions() == {"pending": 1}
    assert daemon.requests  # it was asked first


def test_a_child_forked_while_a_call_is_in_flight_is_not_stuck_behind_it(
        fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A web server forks its workers while a thread of the parent waits for the daemon: the
    child has no such thread, so nothing it inherited may make its own calls wait for one."""
    gate = threading.Event()
    _daemon, client = fake({"closing": True})  # every write is left to the client
    monkeypatch.setattr("durablectl.client.DurableClient._warn_without_workers",
                        lambda self, what: None)
    exchange = client._handoff._exchange

    def held(message: dict[str, Any]) -> Any:
        gate.wait(10)  # the parent's calls stay on the wire until the fork is done
        return exchange(message)

    monkeypatch.setattr(client._handoff, "_exchange", held)
    parent_calls = [threading.Thread(target=client.start_execution, args=("w.any",))
                    for _ in range(4)]  # two senders in flight, two callers queued
    for thread in parent_calls:
        thread.start()
    wait_until(lambda: len(client._handoff._queue) == 2, "two callers queued", timeout=5)
    pid = os.fork()
    if pid == 0:  # the child: its own call must go through at once
        code = 1
        try:
            gate.set()  # only the child's copy: its calls are not held
            client.start_execution("w.any")
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    gate.set()
    for thread in parent_calls:
        thread.join(10)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, "the child was stuck"
    assert client.store.count_executions() == {"pending": 5}  # the parent's four, the child's


def test_errors_cross_the_socket_with_their_class_and_attributes() -> None:
    original = ExecutionNotActive("e1", "signal", "completed", ("pending", "running"))
    rebuilt = decode_error(json.loads(json.dumps(encode_error(original))), "signal")
    same_error(original, rebuilt)  # type: ignore[arg-type]
    assert rebuilt.accepted == ("pending", "running")  # type: ignore[attr-defined]
    foreign = decode_error(encode_error(ValueError("bad")), "start the execution")
    assert isinstance(foreign, StorageError) and "ValueError: bad" in str(foreign)
    wait_until(lambda: True, "nothing")  # the shared helper stays importable
