"""``[hooks] on_event``: the daemon forwards each event to a shell command.

The command runs once per event, with the event as one JSON object (one line, UTF-8, ending in a
newline) on its stdin. A durable event (every kind of ``durable_events``, each entry once)::

    {"type": "durable", "kind": "step_completed", "execution_id": "3f2a...", "data": {...}}

``data`` is the ``DurableEventRecord``'s data: the audit entry's fields (``{"from", "to",
"reason"}`` for ``execution_status_changed``, ``{"step_id", "duration_ms", ...}`` for
``step_completed``, and so on). An event emitted by ``ctx.emit``::

    {"type": "event", "event": "order.shipped", "payload": {...}}

The command also gets ``DURABLECTL_EVENT_TYPE`` (``durable`` or ``event``) and
``DURABLECTL_EVENT`` (the kind, or the event id) in its environment, to filter without parsing.

The command is the user's own configuration and runs with ``shell=True`` (pipes, redirections,
``$VARIABLES``), in the config file's folder, as the daemon's user. It never blocks the daemon's
loop or a workflow: events go to a bounded queue (``QUEUE_SIZE``; when full the oldest event is
dropped, counted and logged) and one background thread runs the commands one at a time, in
event order, each killed (with its process group) after ``TIMEOUT_SECONDS``. A command that
cannot start, exits non-zero or times out is logged on one line and never raised. At daemon stop
the queue is drained for at most ``DRAIN_SECONDS``; what is left is dropped with a warning.

Like every subscriber, the hook sees the events of this process's commits (the executions the
daemon runs): a start or signal written by the CLI shows up once the daemon acts on it. Delivery
is best effort: events still queued when the daemon dies are lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durablectl.clock import monotonic
from durablectl.definitions import Event
from durablectl.events import DurableEventRecord, durable_events

log = logging.getLogger("durablectl.daemon.hooks")

TIMEOUT_SECONDS = 30.0  # a command still running after this is killed
QUEUE_SIZE = 1000  # events waiting for the command; beyond it the oldest is dropped
DRAIN_SECONDS = 5.0  # daemon stop: time left to the queued events
DROP_LOG_SECONDS = 10.0  # at most one "queue full" warning per this many seconds
THREAD_NAME = "durablectl-hooks"
_STDERR_CHARS = 200  # of a failed command's stderr, in its log line


def durable_message(record: DurableEventRecord) -> dict[str, Any]:
    """The JSON object a command gets for a durable event."""
    return {"type": "durable", "kind": record.kind, "execution_id": record.execution_id,
            "data": record.data}


def event_message(event: Event | str, payload: Any) -> dict[str, Any]:
    """The JSON object a command gets for an emitted event."""
    return {"type": "event", "event": event.id if isinstance(event, Event) else event,
            "payload": payload}


def _describe(message: dict[str, Any]) -> str:
    if message.get("type") == "durable":
        execution = message.get("execution_id")
        return f"{message.get('kind')}" + (f" of execution {execution}" if execution else "")
    return f"event {message.get('event')}"


class EventHook:
    """Runs ``command`` once per submitted event, from a bounded queue, in a worker thread.

    ``submit`` never blocks and never raises; ``stop`` drains with a deadline. Counters:
    ``delivered`` (exit 0), ``failed`` (could not start, non-zero exit, timed out), ``dropped``
    (pushed out of a full queue, or left at stop)."""

    def __init__(self, command: str, *, timeout: float = TIMEOUT_SECONDS,
                 queue_size: int = QUEUE_SIZE, cwd: str | Path | None = None) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.command = command
        self.timeout = float(timeout)
        self.queue_size = queue_size
        self.cwd = None if cwd is None else str(cwd)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = 0.0  # set by stop: when the queue's drain ends
        self._current: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._last_drop_log: float | None = None

    # the daemon's side ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def attach(self, service: Any) -> Callable[[], None]:
        """Subscribe to every durable event and every emitted event of ``service`` (a
        ``DurableService``); returns a function that unsubscribes."""
        undo = [service.on(durable_events.audit_appended, self.on_durable),
                service.on_any_event(self.on_event)]

        def detach() -> None:
            for unsubscribe in undo:
                unsubscribe()

        return detach

    def on_durable(self, record: DurableEventRecord) -> None:
        self.submit(durable_message(record))

    def on_event(self, event: Event, payload: Any) -> None:
        self.submit(event_message(event, payload))

    def submit(self, message: dict[str, Any]) -> None:
        """Queue one event for the command (called on the daemon's loop: never blocks)."""
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
                now = monotonic()
                if self._last_drop_log is None or now - self._last_drop_log >= DROP_LOG_SECONDS:
                    self._last_drop_log = now
                    log.warning("hook queue full (%d events): dropped the oldest; %d dropped "
                                "so far (the command %r is slower than the events)",
                                self.queue_size, self.dropped, self.command)
            self._queue.append(message)
            self._cond.notify()

    def pending(self) -> int:
        """Events waiting in the queue (not counting the one whose command runs)."""
        with self._cond:
            return len(self._queue)

    def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Run what is queued for at most ``drain_seconds``, then drop the rest, kill a command
        still running, and end the thread. Blocking: call it from a thread, or at the end."""
        deadline = monotonic() + max(0.0, drain_seconds)
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - monotonic()))
            if thread.is_alive():
                with self._cond:
                    current = self._current
                if current is not None:
                    _kill(current)
                thread.join(2.0)
            if thread.is_alive():
                log.warning("hook thread still busy after the drain deadline; abandoned")
        log.info("hook stopped: %d events delivered, %d failed, %d dropped", self.delivered,
                 self.failed, self.dropped)

    # the worker thread ------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                if self._closing and monotonic() >= self._deadline:
                    left = len(self._queue)
                    self._queue.clear()
                    self.dropped += left
                    log.warning("hook: %d queued event(s) dropped at stop (drain deadline "
                                "reached)", left)
                    return
                message = self._queue.popleft()
            try:
                self._run(message)
            except Exception:  # never let one event end the worker
                self.failed += 1
                log.exception("hook: forwarding %s failed", _describe(message))

    def _run(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str)
                + "\n").encode()
        what = _describe(message)
        env = dict(os.environ)
        env["DURABLECTL_EVENT_TYPE"] = str(message.get("type"))
        env["DURABLECTL_EVENT"] = str(message.get("kind") if message.get("type") == "durable"
                                      else message.get("event"))
        try:
            process = subprocess.Popen(self.command, shell=True, stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       cwd=self.cwd, env=env, start_new_session=True,
                                       close_fds=True)
        except OSError as exc:
            self.failed += 1
            log.error("hook %r could not start for %s: %s", self.command, what, exc)
            return
        with self._cond:
            self._current = process
        try:
            try:
                _out, err = process.communicate(data, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill(process)
                _reap(process)
                self.failed += 1
                log.warning("hook %r timed out after %gs for %s; killed", self.command,
                            self.timeout, what)
                return
        finally:
            with self._cond:
                self._current = None
        if process.returncode == 0:
            self.delivered += 1
            return
        self.failed += 1
        tail = " ".join(err.decode(errors="replace").split())[-_STDERR_CHARS:]
        code = process.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
        log.warning("hook %r %s for %s%s", self.command, how, what,
                    f": {tail}" if tail else "")


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a command and whatever its shell started (its own session and process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Collect a killed command (from the thread that ran it)."""
    try:
        process.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:  # a grandchild that left the group holds a pipe
        for pipe in (process.stdin, process.stderr):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1.0)
    except (OSError, ValueError):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1.0)


def start_event_hook(command: str, service: Any, *,
                     config_path: str | None = None) -> EventHook:
    """The daemon's hook: started and subscribed to ``service``; commands run in the config
    file's folder (the daemon's working folder without one)."""
    hook = EventHook(command, cwd=Path(config_path).parent if config_path else None)
    hook.start()
    hook.attach(service)
    log.info("forwarding events to the hook command %r", command)
    return hook


async def stop_event_hook(hook: EventHook, drain_seconds: float = DRAIN_SECONDS) -> None:
    """Stop ``hook`` without blocking the loop: events already delivered to the loop are queued
    first, then the queue drains in a thread for at most ``drain_seconds``."""
    await asyncio.sleep(0)
    await asyncio.to_thread(hook.stop, drain_seconds)
