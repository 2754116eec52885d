"""Client writes handed to the daemon, so that they join its grouped commits.

A ``DurableClient`` in another process (a web app, a script, the CLI) that writes to the
database itself takes SQLite's write lock against the daemon's writer: each side then waits in
SQLite's busy handler, which sleeps in steps of milliseconds, and thousands of starts a second
collapse to a few hundred (DESIGN-NOTES §2; ``bench.system`` measures it). When the database's
daemon answers on its control socket, the client therefore prepares each write as before (the
workflow resolved, the payload encoded and checked, the id drawn: every error the direct path
raises before writing is raised the same way, in the client) and sends the store call's
arguments to the daemon, which runs it as a job of its grouped writer and answers after the
COMMIT. The daemon's answer carries the store's own exception when the write was refused, so
errors are the same objects either way. No daemon, or one that is stopping: the client writes
directly, as it always did.

Exactly once: an execution id is drawn by the client, so a start whose answer was lost (the
daemon died) is looked up before it is written again; a cancel is looked up the same way; a
signal has no such identity, so a lost answer raises ``StorageError`` saying that it may or may
not be stored, rather than risk delivering it twice. A daemon that stops gracefully answers
every request it has read (``ipc.ControlServer``), so only a crash leaves a write unanswered.

The client half imports neither asyncio nor the engine; the daemon half is given the running
``DurableService`` and uses only what ``DurableService.signal`` and friends use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durablectl import errors
from durablectl.clock import monotonic
from durablectl.daemon.ipc import Connection, NoAnswer, NotDelivered

OPS = frozenset({"start", "signal", "cancel", "batch"})
START_FIELDS = ("execution_id", "workflow_id", "input_json", "max_attempts", "retry_backoff",
                "now", "deadline", "idempotency_key")
REDISCOVER_SECONDS = 1.0  # with no daemon found, look for one again at most this often
SENDERS = 2  # a client's batches on the wire at once: later callers queue for the next one


# errors on the wire -------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A JSON form of an error attribute (tuples tagged, to come back as tuples); raises
    TypeError for what JSON cannot carry."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_plain(v) for v in value]}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    raise TypeError(type(value).__name__)


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(_unplain(v) for v in value["tuple"])
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def encode_error(exc: BaseException) -> dict[str, Any]:
    """Type, message and attributes of an exception, enough to raise it again in the client."""
    try:
        attrs: dict[str, Any] | None = {k: _plain(v) for k, v in vars(exc).items()}
    except TypeError:
        attrs = None
    return {"type": type(exc).__name__, "message": str(exc), "attrs": attrs}


def decode_error(data: dict[str, Any], what: str) -> BaseException:
    """The exception the daemon's store raised, as the same class with the same attributes;
    anything not a durablectl error becomes a ``StorageError`` naming it."""
    cls = getattr(errors, str(data.get("type")), None)
    attrs = data.get("attrs")
    message = str(data.get("message"))
    if isinstance(cls, type) and issubclass(cls, errors.DurableError) and \
            isinstance(attrs, dict):
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)  # as DurableError.__init__ does; attributes follow
        exc.__dict__.update({k: _unplain(v) for k, v in attrs.items()})
        return exc
    return errors.StorageError(f"the daemon could not {what}: {data.get('type')}: {message}")


# the client half ----------------------------------------------------------------------------
class _Slot:
    """One caller's request: queued, then taken into a batch by a sender, then finished.

    Each slot has a bell of its own (a lock held until rung), so a finished batch wakes only
    its own callers and a free sender wakes only the caller that sends next: with a shared
    condition, every answer woke every waiting thread of a busy web app, and the client spent
    more time switching threads than working."""

    __slots__ = ("_bell", "answer", "batch", "error", "message")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self.answer: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.batch: list[_Slot] | None = None  # set when this slot's caller is to send it
        self._bell = threading.Lock()
        self._bell.acquire()

    def ring(self) -> None:
        self._bell.release()

    def wait(self) -> None:
        self._bell.acquire()


class Handoff:
    """The client's way to the daemon of its database, found through
    ``daemon.paths.socket_for`` (the recorded socket path included).

    One persistent connection per client, and the calls of concurrent threads are coalesced:
    the first caller sends its request; the ones that arrive while it is on the wire queue up
    and go together as one ``batch`` request, which the daemon runs in one grouped commit. A
    web app's request threads then cost the daemon one read, one wake-up and one answer per
    batch, not per call, and a single-threaded caller waits no longer than before."""

    Lost = NoAnswer  # what ``call`` raises when the answer was lost (the client catches it)

    def __init__(self, store: Any) -> None:
        self._store = store
        self._database: str | None = getattr(store, "path", None)
        self._path: Path | None = None
        self._looked_at = -REDISCOVER_SECONDS
        self._lock = threading.Lock()
        self._discovery = threading.Lock()
        self._queue: list[_Slot] = []
        self._senders = 0  # batches on the wire, at most SENDERS
        self._idle: list[Connection] = []  # connections no batch uses now
        self._pid = os.getpid()  # a forked child must not share its parent's connections

    def _socket(self) -> Path | None:
        with self._discovery:  # concurrent first callers all wait for the one look-up
            if self._path is None and self._database is not None and \
                    monotonic() - self._looked_at >= REDISCOVER_SECONDS:
                from durablectl.daemon.paths import socket_for

                try:
                    self._path = socket_for(self._database, self._store)
                    if self._path is not None and \
                            self._store.get_meta("daemon.pid") == str(os.getpid()):
                        self._path = None  # in the daemon itself: its loop may be the caller
                except Exception:  # no state dir, an unreadable meta row: write directly
                    self._path = None
                self._looked_at = monotonic()
            return self._path

    def _connection(self) -> Connection | None:
        """A connection for one batch: an idle one, or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        path = self._socket()
        if path is None:
            return None
        try:
            return Connection(path)
        except NotDelivered:
            self._forget()
            return None

    def _forked(self) -> None:
        """In a child forked from a process that used this client: the parent's connections
        and its batches in flight (whose senders did not come along) are not the child's; its
        first call starts afresh."""
        self._lock = threading.Lock()
        self._queue, self._senders, self._idle = [], 0, []
        self._pid = os.getpid()

    def _release(self, connection: Connection) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append(connection)

    def _forget(self) -> None:
        """No daemon answered: close every kept connection, write directly, and look for a
        daemon again in a second."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        self._path = None
        self._looked_at = monotonic()

    def call(self, message: dict[str, Any], what: str) -> dict[str, Any] | None:
        """The daemon's answer to a write, or None when no daemon took it (nothing was done:
        write directly). Raises the store's error when the daemon's write was refused, and
        ``NoAnswer`` when the answer was lost (the caller finds out what happened).

        A caller that finds a sender free sends its request at once. Otherwise it queues;
        when a batch is answered, its sender hands everything queued meanwhile to the first
        queued caller, which sends it as one batch (its own request included). Every other
        caller sleeps until its own batch is answered."""
        if self._database is None:
            return None
        if self._pid != os.getpid():
            self._forked()
        slot = _Slot(message)
        with self._lock:
            if self._senders < SENDERS:
                self._senders += 1
                slot.batch = [slot]
            else:
                self._queue.append(slot)
        if slot.batch is None:
            slot.wait()  # rung when its batch is answered, or when it is to send the queue
        while slot.batch is not None:
            batch, slot.batch = slot.batch, None
            self._send(batch)  # rings every slot of the batch, this one too
            slot.wait()
        if slot.error is not None:
            raise slot.error
        answer = slot.answer
        if answer is None or answer.get("ok"):
            return answer
        error = answer.get("error")
        if isinstance(error, dict):
            raise decode_error(error, what)
        return None  # a daemon without this op (an older version): write directly

    def _send(self, batch: list[_Slot]) -> None:
        """Send a batch as one request and hand out its answers (or its failure); then hand
        the requests queued meanwhile to the first of their callers, the next sender."""
        answers: list[Any] = [None] * len(batch)
        failure: BaseException | None = None
        try:
            messages = [slot.message for slot in batch]
            answer = self._exchange(messages[0] if len(batch) == 1 else
                                    {"op": "batch", "requests": messages})
            if answer is None or len(batch) == 1:
                answers = [answer] * len(batch)
            elif answer.get("ok") and isinstance(answer.get("answers"), list) and \
                    len(answer["answers"]) == len(batch):
                answers = answer["answers"]
            else:  # refused as a whole (a daemon without batches): each writes directly
                answers = [answer] * len(batch)
        except BaseException as exc:  # NoAnswer, or anything unexpected: every caller sees it
            failure = exc
        with self._lock:
            following: list[_Slot] = []
            if self._queue:
                following, self._queue = self._queue, []  # this sender's turn passes on
            else:
                self._senders -= 1
        for slot, answer in zip(batch, answers, strict=True):
            slot.answer, slot.error = answer, failure
            slot.ring()
        if following:
            following[0].batch = following
            following[0].ring()

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """One request on a connection; None when no daemon took it."""
        for fresh in (False, True):
            connection = self._connection()
            if connection is None:
                return None
            try:
                answer = connection.call(message)
            except NotDelivered:
                # a connection kept from before a daemon restart: one fresh try
                connection.close()
                if not fresh:
                    self._forget()
                    self._looked_at = -REDISCOVER_SECONDS
                    continue
                self._forget()
                return None
            except NoAnswer:
                connection.close()
                self._forget()
                raise
            self._release(connection)
            return answer
        return None


# the daemon half ----------------------------------------------------------------------------
async def serve(service: Any, message: dict[str, Any],
                on_unloaded: Callable[[], None]) -> dict[str, Any]:
    """Run one handed-over write (or a batch of them, concurrently, so that they share a
    commit) in the service's grouped writer; answer after the commit. ``on_unloaded`` is
    called for an execution of a workflow this daemon has not loaded (the daemon marks it so,
    as it does for a direct write it is nudged about)."""
    if message.get("op") == "batch":
        import asyncio

        requests = message.get("requests")
        if not isinstance(requests, list):
            return {"ok": False, "error": encode_error(ValueError("a batch needs requests"))}
        answers: list[Any] = [None] * len(requests)
        starts = [i for i, r in enumerate(requests) if isinstance(r, dict) and
                  r.get("op") == "start"]
        together = await _start_together(service, [requests[i] for i in starts],
                                         on_unloaded) if len(starts) > 1 else None
        if together is not None:
            for i, answer in zip(starts, together, strict=True):
                answers[i] = answer
        rest = [i for i, answer in enumerate(answers) if answer is None]
        done = await asyncio.gather(*(_one(service, requests[i], on_unloaded) for i in rest))
        for i, answer in zip(rest, done, strict=True):
            answers[i] = answer
        return {"ok": True, "answers": answers}
    return await _one(service, message, on_unloaded)


async def _one(service: Any, message: Any, on_unloaded: Callable[[], None]) -> dict[str, Any]:
    op = message.get("op") if isinstance(message, dict) else None
    try:
        if op == "start":
            answers = await _start_together(service, [message], on_unloaded)
            assert answers is not None  # one start alone raises its error instead
            return answers[0]
        if op == "signal":
            return await _signal(service, message)
        if op == "cancel":
            return await _cancel(service, message)
        return {"ok": False, "error": f"unknown op {op!r}"}
    except Exception as exc:
        return {"ok": False, "error": encode_error(exc)}


async def _start_together(service: Any, messages: list[dict[str, Any]],
                          on_unloaded: Callable[[], None]) -> list[dict[str, Any]] | None:
    """Store the executions of start requests in one job of the grouped writer (one future
    and one wake-up for all), and claim the new ones this daemon has room for in the same
    transaction, as a signal that wakes an execution does (``signal_and_claim``): they start
    at once, without a claim of their own. Their answers; None when the job failed: it
    rolled back whole, and each start is then run as a job of its own, so that only the
    faulty one fails."""
    runner, store = service.runner, service.store
    arguments = [{name: m[name] for name in START_FIELDS} for m in messages]
    loaded = set(service.registry.ids())
    room = service.runner.concurrency - len(runner.running) if runner.has_room() else 0
    lease_until = runner.lease_until()

    def create_all() -> list[tuple[str, bool, Any]]:
        done: list[tuple[str, bool, Any]] = []
        free = room
        for a in arguments:
            claim = None
            if free > 0 and a["workflow_id"] in loaded:  # stored as running, ours
                execution_id, created, claim = store.create_and_claim(
                    **a, worker_id=service.worker_id, lease_until=lease_until,
                    audit=service.audit)
                free -= claim is not None
            else:
                execution_id, created = store.create_execution(**a, audit=service.audit)
            done.append((execution_id, created, claim))
        return done

    try:
        created = await runner.env.write(create_all)
    except Exception:
        if len(messages) > 1:
            return None
        raise
    for _execution_id, _fresh, claim in created:
        if claim is not None:
            runner.adopt(claim)
    if any(claim is None for _e, _f, claim in created):
        runner.wake()
    if any(a["workflow_id"] not in loaded for a in arguments):
        on_unloaded()
    return [{"ok": True, "execution_id": execution_id, "created": fresh}
            for execution_id, fresh, _claim in created]


async def _signal(service: Any, message: dict[str, Any]) -> dict[str, Any]:
    """As ``DurableService.signal`` does it: when the signal wakes an execution this daemon
    runs, it is claimed in the same transaction and starts at once."""
    runner, store = service.runner, service.store
    common = {"execution_id": str(message["execution_id"]),
              "signal_id": str(message["signal_id"]), "payload_json": message["payload_json"],
              "now": float(message["now"])}
    if runner.has_room():
        seq, claim = await runner.env.write(
            store.signal_and_claim, **common, worker_id=service.worker_id,
            workflow_ids=service.registry.ids(), lease_until=runner.lease_until(),
            audit=service.audit)
        if claim is not None:
            runner.adopt(claim)
            return {"ok": True, "seq": int(seq)}
    else:
        seq = await runner.env.write(store.append_signal, **common)
    runner.wake()
    return {"ok": True, "seq": int(seq)}


async def _cancel(service: Any, message: dict[str, Any]) -> dict[str, Any]:
    execution_id = str(message["execution_id"])
    await service.runner.env.write(service.store.cancel_execution, execution_id,
                                   reason=message.get("reason"), now=float(message["now"]))
    service.runner.request_cancel(execution_id)  # a running one stops at its next durable call
    service.runner.wake()
    return {"ok": True}
