"""Serving the dashboard from the daemon: the standard library's ``wsgiref`` server with a small
fixed pool of request threads, in background threads of the daemon process.

A pool rather than a thread per request: the SQLite store keeps one read connection per
thread, so a bounded set of threads means a bounded set of connections. Requests are logged at
debug level through ``logging`` (the request line only: the token is never in a URL)."""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import selectors
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from durablectl.clock import monotonic
from durablectl.codec import DEFAULT_MAX_PAYLOAD_BYTES
from durablectl.dashboard.app import DashboardApp
from durablectl.errors import DurableError
from durablectl.store.base import Store

log = logging.getLogger("durablectl.dashboard")

REQUEST_THREADS = 4
REQUEST_TIMEOUT_SECONDS = 15.0  # a client that stops sending frees its thread after this
STOP_SECONDS = 2.0  # how long stopping waits for requests in flight
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class DashboardBindError(DurableError):
    """The dashboard could not listen on its address (in use, not an address of this host)."""

    exit_code = 6


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard %s: " + format, self.address_string(), *args)

    def address_string(self) -> str:
        return str(self.client_address[0])


class _PooledServer(WSGIServer):
    """``WSGIServer`` whose requests run on ``REQUEST_THREADS`` long-lived threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: int) -> None:
        self.address_family = family
        self._requests: queue.Queue[tuple[Any, Any] | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        super().__init__(address, _Handler)

    def start_workers(self) -> None:
        for number in range(REQUEST_THREADS):
            worker = threading.Thread(target=self._work, name=f"durablectl-dashboard-{number}",
                                      daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._requests.put((request, client_address))

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard: a connection from %s failed", client_address, exc_info=True)

    def stop_workers(self, timeout: float) -> None:
        """Let the request threads finish what they are answering, for ``timeout`` seconds in
        all (they are daemon threads: one that is stuck does not hold the process)."""
        for _ in self._workers:
            self._requests.put(None)
        deadline = monotonic() + timeout
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - monotonic()))

    def accept_until(self, wake_fd: int) -> None:
        """Accept connections until ``wake_fd`` is readable. Blocks in ``select`` with no
        time-out (``serve_forever`` polls twice a second), so an idle dashboard costs no CPU
        and stops at once."""
        self.socket.setblocking(False)  # a connection gone before accept() must not block it
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(wake_fd, selectors.EVENT_READ)
            while True:
                for key, _events in selector.select():
                    if key.fd == wake_fd:
                        return
                    try:
                        request, client_address = self.get_request()
                    except OSError:
                        continue
                    self.process_request(request, client_address)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host part of a URL a browser on this machine can open."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def allowed_hosts_for(host: str, extra: Iterable[str]) -> list[str]:
    """The Host names a served dashboard accepts: the bound address, localhost (and the
    loopback addresses), and ``[dashboard] allowed_hosts``."""
    return [host, *LOOPBACK_NAMES, *extra]


class DashboardServer:
    """The dashboard on ``host:port`` (port 0: any free port) in background threads."""

    def __init__(self, store: Store, *, host: str, port: int, token: str,
                 operator: bool = True, allowed_hosts: Iterable[str] = (),
                 on_change: Callable[[], None] | None = None,
                 daemon_info: Callable[[], dict[str, Any]] | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.host = host
        self.app = DashboardApp(store, token=token, operator=operator,
                                allowed_hosts=allowed_hosts_for(host, allowed_hosts),
                                on_change=on_change, daemon_info=daemon_info,
                                max_payload_bytes=max_payload_bytes)
        self._requested_port = port
        self._server: _PooledServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"DashboardServer({self.host!r}, {self._requested_port})"

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}/"

    def start(self) -> str:
        """Listen, then serve in a thread; returns the URL. Raises ``DashboardBindError``."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            server = _PooledServer((self.host, self._requested_port), family)
        except OSError as exc:
            raise DashboardBindError(
                f"cannot serve the dashboard on {self.host}:{self._requested_port}: "
                f"{exc.strerror or exc} (see [dashboard] host and port)") from exc
        server.set_app(self.app)
        server.start_workers()
        self._server = server
        self._wake = os.pipe()
        self._thread = threading.Thread(target=server.accept_until, args=(self._wake[0],),
                                        name="durablectl-dashboard", daemon=True)
        self._thread.start()
        if not is_loopback(self.host):
            log.warning("the dashboard listens on %s, reachable from other machines: it is "
                        "protected by its token only, and served without TLS", self.host)
        log.info("dashboard listening on %s (%s)", self.url,
                 "operator actions on" if self.app.operator else "read-only")
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._wake is not None:
            os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        server.server_close()
        server.stop_workers(STOP_SECONDS)
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
