"""The daemon process: run in the foreground, start detached, stop, and report status.

One daemon per database. Its pid file is also its lock: the daemon holds an exclusive ``flock``
on it for its whole life, so "is a daemon alive?" is answered by the kernel (a pid file alone
outlives a ``kill -9``). ``daemon start`` runs ``daemon run`` in a new session with a pipe on
which the child says ``ready`` once workflows are loaded, recovery is done and the socket
(and the dashboard, when enabled) listens, or the one-line error (and exit code) that stopped it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durablectl.clock import monotonic, real_time
from durablectl.daemon.paths import (  # noqa: F401 - socket_for is re-exported
    DaemonPaths,
    daemon_paths,
    ensure_private_dir,
    socket_for,
)
from durablectl.errors import (
    DaemonNotRunning,
    DaemonRunning,
    DurableError,
    StorageError,
    UnsafePermissions,
)

log = logging.getLogger("durablectl.daemon")

DB_CHECK_SECONDS = 2.0  # how often the daemon checks that its database file is still there
UNLOADED_CHECK_SECONDS = 1.0  # fallback for lost nudges: other processes' new executions
STEP_THREAD_PREFIX = "durablectl-step"  # the runner's step threads (see runner.Runner)
META_PID = "daemon.pid"
META_SOCKET = "daemon.socket"
META_DASHBOARD = "dashboard.url"  # what `durablectl dashboard` prints


@dataclass(frozen=True)
class DaemonSettings:
    """What the daemon needs from the configuration (kept apart so this module does not
    depend on the configuration's layout)."""

    database: str
    workflows: str
    log_file: str | None
    service_options: dict[str, Any]
    store_options: dict[str, Any]
    config_path: str | None = None
    on_event: str | None = None  # [hooks] on_event: a command run with each event (hooks.py)
    dashboard: DashboardSettings | None = None  # None: no dashboard is served


@dataclass(frozen=True)
class DashboardSettings:
    """``[dashboard]`` when enabled (SPEC §7)."""

    token: str = field(repr=False)  # never in a log line or a traceback's repr
    host: str = "127.0.0.1"
    port: int = 8765
    allowed_hosts: tuple[str, ...] = ()
    operator: bool = True


# -- liveness ---------------------------------------------------------------------------------
def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(paths: DaemonPaths) -> int | None:
    """The pid of the live daemon of this database, or None (its lock is free)."""
    try:
        fd = os.open(paths.pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_pid(paths.pid_file) or -1
    finally:
        os.close(fd)
    return None


def _take_pid_lock(paths: DaemonPaths) -> int:
    ensure_private_dir(paths.pid_file.parent)
    fd = os.open(paths.pid_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise DaemonRunning(_read_pid(paths.pid_file) or -1, str(paths.database)) from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# -- permissions ------------------------------------------------------------------------------
def check_permissions(database: str, workflows: str) -> None:
    """Refuse a database file (when it exists), its folder or the workflows folder that users
    other than the owner can write: they could change the history or the code the daemon runs
    (a missing workflows folder is only warned about later)."""
    db = Path(os.path.realpath(database))
    checked = [(db, "database"), (db.parent, "database folder"),
               (Path(os.path.realpath(workflows)), "workflows folder")]
    for path, what in checked:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if mode & 0o022:
            raise UnsafePermissions(
                f"refusing to serve {db}: the {what} {path} is writable by other users "
                f"(mode {mode & 0o7777:04o}); chmod go-w {path}")


# -- the daemon itself ------------------------------------------------------------------------
class Daemon:
    """A DurableService plus module loading, a control socket and signal handling."""

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.paths = daemon_paths(settings.database, log_file=settings.log_file)
        self.started = real_time()
        self.exit_code = 0
        self.dashboard_url: str | None = None

    async def run(self, on_ready: Any = None) -> int:
        import asyncio

        from durablectl.daemon import handoff, ipc
        from durablectl.daemon.loader import WorkflowLoader
        from durablectl.service import DurableService
        from durablectl.store.sqlite import SqliteStore

        check_permissions(self.settings.database, self.settings.workflows)
        lock_fd = _take_pid_lock(self.paths)
        store: SqliteStore | None = None
        service: DurableService | None = None
        server: Any = None
        tasks: list[asyncio.Task[Any]] = []
        hook: Any = None
        dashboard: Any = None
        try:
            store = SqliteStore(self.settings.database, **self.settings.store_options)
            db_stat = os.stat(store.path)
            service = DurableService(store, [], **self.settings.service_options)
            if self.settings.on_event:
                from durablectl.daemon.hooks import start_event_hook

                hook = start_event_hook(self.settings.on_event, service,
                                        config_path=self.settings.config_path)
            loader = WorkflowLoader(self.settings.workflows, service.registry)
            if not loader.folder.is_dir():
                log.warning("workflows folder %s does not exist; no workflows loaded",
                            loader.folder)
            loader.load()
            await service.start()
            service.sync_declared_schedules(pause_undeclared=True)
            self.stop_event = asyncio.Event()
            running_service = service

            self.unloaded_check = asyncio.Event()

            async def handle(message: dict[str, Any]) -> dict[str, Any]:
                op = message.get("op")
                if op == "nudge":
                    running_service.runner.wake()
                    self.unloaded_check.set()
                    return {"ok": True}
                if op == "status":
                    return {"ok": True, **await self.status(running_service, loader)}
                if op == "stop":
                    self.stop_event.set()
                    return {"ok": True, "pid": os.getpid()}
                if op in handoff.OPS:  # a client's write, committed with ours (handoff.py)
                    return await handoff.serve(running_service, message,
                                               self.unloaded_check.set)
                return {"ok": False, "error": f"unknown op {op!r}"}

            ensure_private_dir(self.paths.socket.parent)
            server = await ipc.serve(self.paths.socket, handle)
            store.set_meta(META_PID, str(os.getpid()))
            store.set_meta(META_SOCKET, str(self.paths.socket))
            if self.settings.dashboard is not None:
                dashboard = self._start_dashboard(self.settings.dashboard, running_service,
                                                  loader)
                store.set_meta(META_DASHBOARD, dashboard.url)

            async def reloaded(errors: list[Any]) -> None:
                running_service.store.record_workflows(
                    worker_id=running_service.worker_id,
                    workflows=[(wf.id, wf.alias, wf.max_attempts, wf.retry_backoff, wf.timeout)
                               for wf in running_service.registry.all()],
                    now=running_service.clock.timestamp())
                running_service.sync_declared_schedules(pause_undeclared=True)
                await running_service.recover()

            for name, job in (("watching the workflows folder",
                               loader.watch(reloaded, self.stop_event)),
                              ("watching the database file",
                               self._watch_database(store.path, db_stat)),
                              ("marking unloaded workflows", self._watch_unloaded(service))):
                tasks.append(asyncio.ensure_future(_logged(name, job)))
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop_event.set)
            log.info("daemon %d ready: database %s, %d workflows, socket %s", os.getpid(),
                     store.path, len(service.registry.ids()), self.paths.socket)
            if on_ready is not None:
                on_ready()
            await self.stop_event.wait()
            log.info("daemon %d stopping (grace %ss)", os.getpid(), service.grace_seconds)
            return self.exit_code
        finally:
            for task in tasks:
                task.cancel()
            if dashboard is not None:
                dashboard.stop()
                with contextlib.suppress(Exception):
                    if store is not None and self.exit_code != 6:
                        store.set_meta(META_DASHBOARD, None)
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()
            if service is not None and self.exit_code != 6:
                await service.stop()
                with contextlib.suppress(Exception):
                    if store is not None:
                        store.set_meta(META_PID, None)
                        store.set_meta(META_SOCKET, None)
            if hook is not None:
                from durablectl.daemon.hooks import stop_event_hook

                await stop_event_hook(hook)
            if store is not None and self.exit_code != 6:
                store.close()
            with contextlib.suppress(OSError):
                self.paths.pid_file.unlink()
            os.close(lock_fd)
            log.info("daemon %d stopped", os.getpid())

    async def _watch_database(self, path: str, original: os.stat_result) -> None:
        """Stop, writing nothing more, if the database file is deleted or replaced."""
        import asyncio

        companions = _companion_files(path)
        while True:
            await asyncio.sleep(DB_CHECK_SECONDS)
            try:
                now = os.stat(path)
                same = (now.st_ino, now.st_dev) == (original.st_ino, original.st_dev)
            except FileNotFoundError:
                same = False
            if not same:
                message = f"the database file {path} was deleted or replaced; stopping"
                log.error(message)
                print(f"error: {message}", file=sys.stderr, flush=True)
                # our -wal and -shm belong to the old file: left beside a replacement (or a
                # file created later at the same path) they would be replayed into it
                _remove_companions(companions)
                self.exit_code = 6
                self.stop_event.set()
                return

    async def _watch_unloaded(self, service: Any) -> None:
        """Give executions that other processes store for a workflow this daemon has not loaded
        a ``status_reason`` saying so (SPEC §3: they wait, they are not failed). Start-up and
        reloads do it through ``recover``; this covers executions stored while the daemon runs,
        at once on a nudge, else when ``data_version`` says someone committed."""
        import asyncio

        from durablectl.runner import UNLOADED_REASON

        store = service.store
        last_version: int | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.unloaded_check.wait(), UNLOADED_CHECK_SECONDS)
            nudged = self.unloaded_check.is_set()
            self.unloaded_check.clear()
            try:
                version = store.data_version()
                if version == last_version and not nudged:
                    continue
                last_version = version
                await service.runner.env.write(store.mark_unloaded,
                                               workflow_ids=service.registry.ids(),
                                               reason_prefix=UNLOADED_REASON)
            except Exception:
                log.exception("could not mark executions of workflows not loaded")

    async def status(self, service: Any, loader: Any) -> dict[str, Any]:
        import asyncio

        store = service.store

        def read() -> tuple[dict[str, int], float | None, list[Any]]:
            return store.count_executions(), store.next_due_at(), store.live_workers()

        # counting a million executions takes tens of milliseconds: not on the loop, where
        # it would hold up every wake-up due meanwhile
        counts, next_due, workers = await asyncio.get_running_loop().run_in_executor(None, read)
        return {
            "pid": os.getpid(),
            "database": store.path,
            "workflows": sorted(service.registry.ids()),
            "uptime_s": round(real_time() - self.started, 3),
            "executions": counts,
            "next_due": None if next_due is None else _iso(next_due),
            "socket": str(self.paths.socket),
            "log_file": str(self.paths.log_file),
            "workers": [w.worker_id for w in workers],
            "load_errors": [str(e) for e in loader.errors.values()],
            "running": len(service.runner.running),
            "cache": _cache_sizes(service),
            "dashboard": self.dashboard_url,
        }

    def _start_dashboard(self, settings: DashboardSettings, service: Any, loader: Any) -> Any:
        """Serve the dashboard in threads of this process, on the daemon's store; a write it
        commits wakes the runner at once."""
        import asyncio

        from durablectl.dashboard.server import DashboardServer

        loop = asyncio.get_running_loop()

        def wake() -> None:
            service.runner.wake()
            self.unloaded_check.set()

        def changed() -> None:  # called from a request thread
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(wake)

        def info() -> dict[str, Any]:
            return {"pid": os.getpid(), "state": "running",
                    "uptime_s": round(real_time() - self.started, 3),
                    "workflows": sorted(service.registry.ids()),
                    "load_errors": [str(e) for e in loader.errors.values()]}

        dashboard = DashboardServer(service.store, host=settings.host, port=settings.port,
                                    token=settings.token, operator=settings.operator,
                                    allowed_hosts=settings.allowed_hosts, on_change=changed,
                                    daemon_info=info,
                                    max_payload_bytes=service.max_payload_bytes)
        self.dashboard_url = dashboard.start()
        return dashboard


def _cache_sizes(service: Any) -> dict[str, int | None]:
    """What the bounded caches of recently active executions hold now (SPEC §5: apart from
    them a parked execution costs rows, not memory): decoded histories and kept suspended
    runs (the sticky cache), so a benchmark or an operator can see that they stay bounded."""
    env = service.runner.env
    sticky = getattr(env, "sticky", None)  # the engine's kept suspended runs, if it has them
    histories = env.histories
    return {"size": int(service.cache_size),
            "histories": None if histories is None else len(histories),
            "coroutines": None if sticky is None else len(sticky)}


async def _logged(what: str, job: Awaitable[None]) -> None:
    """A background task whose failure is logged, not lost until exit."""
    try:
        await job
    except Exception:
        log.exception("daemon %d: %s failed", os.getpid(), what)


def _companion_files(path: str) -> dict[str, tuple[int, int]]:
    """The database's -wal and -shm files as they are now (path -> inode, device)."""
    found: dict[str, tuple[int, int]] = {}
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            stat = os.stat(path + suffix)
            found[path + suffix] = (stat.st_ino, stat.st_dev)
    return found


def _remove_companions(companions: dict[str, tuple[int, int]]) -> None:
    """Remove the -wal/-shm files that are still the ones this daemon opened (never a newer
    file's own)."""
    for companion, identity in companions.items():
        with contextlib.suppress(OSError):
            stat = os.stat(companion)
            if (stat.st_ino, stat.st_dev) == identity:
                os.unlink(companion)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def run_foreground(settings: DaemonSettings, *, ready_fd: int | None = None) -> int:
    """``daemon run``: the daemon in this process until SIGTERM/SIGINT. With ``ready_fd``
    (from ``daemon start``) it reports readiness or its start-up error on that pipe."""
    def report(line: str) -> None:
        if ready_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(ready_fd, (line + "\n").encode())
            os.close(ready_fd)

    daemon = Daemon(settings)
    try:
        code = _loop_runner()(daemon.run(on_ready=lambda: report(f"ready {os.getpid()}")))
    except DurableError as exc:
        report(f"error {exc.exit_code} {exc}")
        raise
    except Exception as exc:
        report(f"error 6 {type(exc).__name__}: {exc}")
        raise
    _leave_abandoned_steps(code)
    return code


def _loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's event loop when it is installed (a dependency on POSIX), else asyncio's.

    The daemon is CPU-bound in its event loop under load: every step is a few loop turns (the
    step's thread hands its result back, the grouped commit hands the write back), and uvloop
    runs those turns in C. ``make bench`` measured ~10-15 % more executions per second of daemon
    CPU with it. The library itself runs on whatever loop its caller chose."""
    import asyncio

    try:
        import uvloop
    except ImportError:  # not installed (an unsupported platform): the standard loop
        return asyncio.run
    return uvloop.run


def _leave_abandoned_steps(code: int) -> None:
    """Exit now if a synchronous step outlived the grace period. Its thread cannot be
    interrupted, and the interpreter would wait for it at exit, forever for a step that
    blocks: the daemon would linger after ``daemon stop`` said it stopped. Its execution was
    released and runs again from its history on the next start (at-least-once steps)."""
    import threading

    lingering = [t.name for t in threading.enumerate()
                 if t.name.startswith(STEP_THREAD_PREFIX) and t.is_alive()]
    if not lingering:
        return
    log.warning("daemon %d: %d step thread(s) still running after the grace period are "
                "abandoned", os.getpid(), len(lingering))
    logging.shutdown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def start_detached(settings: DaemonSettings, *, timeout: float = 30.0) -> int:
    """``daemon start``: run the daemon in the background and return its pid once it is
    ready; raise its start-up error otherwise."""
    paths = daemon_paths(settings.database, log_file=settings.log_file)
    pid = running_pid(paths)
    if pid is not None:
        raise DaemonRunning(pid, str(paths.database))
    ensure_private_dir(paths.log_file.parent)
    log_fd = os.open(paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "durablectl", "daemon", "run", "--db", settings.database,
               "--ready-fd", str(write_end)]
    if settings.config_path:
        command += ["--config", settings.config_path]
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_fd,
                                 stderr=log_fd, pass_fds=(write_end,), start_new_session=True,
                                 close_fds=True)
    finally:
        os.close(write_end)
        os.close(log_fd)
    line = _read_line(read_end, timeout, child)
    if line.startswith("ready"):
        return child.pid
    if line.startswith("error "):
        _, code, message = line.split(" ", 2)
        error = DurableError(message)
        error.exit_code = int(code)
        raise error
    child.poll()
    raise StorageError(f"the daemon exited before it was ready (exit {child.returncode}); "
                       f"see {paths.log_file}")


def read_ready_line(fd: int, timeout: float) -> str | None:
    """The first line a starting daemon writes to its readiness pipe (``fd``), stripped; what
    it wrote before closing the pipe if that was all; None when ``timeout`` seconds went by
    first. ``daemon start`` and the benchmarks' daemon harness both wait on it."""
    import select

    data = b""
    deadline = monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _read_line(fd: int, timeout: float, child: subprocess.Popen[bytes]) -> str:
    try:
        line = read_ready_line(fd, timeout)
    finally:
        os.close(fd)
    if line is None:
        child.kill()
        raise StorageError(f"the daemon was not ready after {timeout:g}s")
    return line


def stop(settings: DaemonSettings, *, timeout: float | None = None) -> int:
    """``daemon stop``: ask the daemon to stop, wait until it has; returns its pid."""
    from durablectl.daemon import ipc

    paths = daemon_paths(settings.database, log_file=settings.log_file)
    pid = running_pid(paths)
    if pid is None:
        raise DaemonNotRunning(f"no daemon runs for {paths.database}")
    try:
        ipc.request(paths.socket, "stop", timeout=5)
    except DaemonNotRunning:
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    grace = float(settings.service_options.get("grace_seconds", 10))
    deadline = monotonic() + (timeout if timeout is not None else grace + 10)
    # stopped means gone: the lock is released a moment before the process has exited
    while running_pid(paths) is not None or (pid > 0 and process_alive(pid)):
        if monotonic() > deadline:
            raise StorageError(f"the daemon (pid {pid}) did not stop in time")
        time.sleep(0.02)
    return pid


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie that no one has reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all we know


def status(settings: DaemonSettings) -> dict[str, Any]:
    """``daemon status``: what the live daemon says about itself."""
    from durablectl.daemon import ipc

    paths = daemon_paths(settings.database, log_file=settings.log_file)
    if running_pid(paths) is None:
        raise DaemonNotRunning(f"no daemon runs for {paths.database}")
    answer = ipc.request(paths.socket, "status", timeout=5)
    answer.pop("ok", None)
    return answer
