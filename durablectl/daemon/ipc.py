"""Daemon control over a Unix socket: one JSON object per line each way.

Requests are ``{"op": "nudge" | "status" | "stop"}``, and the writes a client hands to the
daemon (``durablectl.daemon.handoff``: ``start``, ``signal``, ``cancel``). A nudge tells the
daemon that another process committed work: it only saves latency, since the daemon also
notices other processes' commits through ``PRAGMA data_version``. The client side uses plain
sockets so that the CLI and ``DurableClient`` never import asyncio.

A connection may carry many requests, one after the other: a client that hands over thousands
of writes keeps its connection (``Connection``) instead of paying a connect per call. Each
request is answered before the next is read. When the daemon stops, every request it has read
is still answered (its write may have committed); a connection idle at that moment gets a
``{"closing": true}`` line instead, so its client knows that the next request was not read
and can write directly without doubling anything."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from durablectl.errors import DaemonNotRunning

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_LINE = 1 << 20


def request(path: Path | str, op: str, *, timeout: float = 5.0,
            **fields: Any) -> dict[str, Any]:
    """Send one request and return the daemon's answer; ``DaemonNotRunning`` if none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunning(f"no daemon listens on {path}") from exc
        sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        line = data.partition(b"\n")[0]  # a stopping daemon follows it with a closing line
        if not line:
            raise DaemonNotRunning(f"the daemon on {path} closed the connection")
        answer: dict[str, Any] = json.loads(line)
        return answer
    except TimeoutError as exc:
        raise DaemonNotRunning(f"the daemon on {path} did not answer in {timeout:g}s") from exc
    finally:
        sock.close()


def nudge(path: Path | str | None) -> bool:
    """Best effort: wake the daemon at once. Returns False when no daemon listens."""
    if path is None:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(os.fspath(path))
        sock.sendall(b'{"op":"nudge"}\n')
        return True
    except OSError:
        return False
    finally:
        sock.close()


class NotDelivered(Exception):
    """The daemon did not take the request (none listens, or it is closing): nothing was
    done, so the caller may do it another way."""


class NoAnswer(Exception):
    """The request was sent but no answer came (the daemon died or stalled): whether it was
    done is unknown, and the caller has to find out before doing it again."""


class Connection:
    """A persistent client connection: ``call`` sends one request and returns its answer.

    Not for concurrent use: give each thread its own (one request in flight per connection
    keeps the protocol trivial; the daemon still commits the requests of many connections
    together)."""

    def __init__(self, path: Path | str, *, timeout: float = 60.0) -> None:
        self.path = os.fspath(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._buffer = b""
        try:
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise NotDelivered(f"no daemon listens on {self.path}: {exc}") from exc

    def close(self) -> None:
        self._sock.close()

    def __del__(self) -> None:  # a thread that ends drops its connection: no ResourceWarning
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def _closed_by_daemon(self) -> bool:
        """Whether the daemon has closed this connection while it was idle (EOF, or its
        ``closing`` line waits to be read): checked without blocking before each request."""
        if self._buffer:
            return True
        try:
            ready, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(ready)

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._closed_by_daemon():
            raise NotDelivered(f"the daemon on {self.path} closed the connection")
        try:
            self._sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except OSError as exc:
            raise NotDelivered(f"the daemon on {self.path} is gone: {exc}") from exc
        line = self._readline()
        if not line:
            raise NoAnswer(f"the daemon on {self.path} closed the connection without answering")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("closing"):
            raise NotDelivered(f"the daemon on {self.path} is stopping")
        return answer

    def _readline(self) -> bytes:
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise NoAnswer(f"the daemon on {self.path} did not answer in "
                               f"{self._sock.gettimeout():g}s") from exc
            except OSError:
                chunk = b""
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


class ControlServer:
    """The listening socket and its connections; ``close`` + ``wait_closed`` stop reading
    requests and let the ones being handled finish and answer (the daemon stops its store only
    afterwards, so an answered write is committed and a committed write is answered)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: Any = None
        self._closing = False
        self._connections: set[Any] = set()
        self._idle: set[Any] = set()  # connection tasks waiting for their next request

    async def _connection(self, reader: Any, writer: Any) -> None:
        import asyncio

        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while not self._closing:
                self._idle.add(task)
                try:
                    line: bytes | None = await reader.readline()
                except asyncio.CancelledError:  # close(): read no more requests
                    line = None
                finally:
                    self._idle.discard(task)
                if line is None:
                    break
                if not line:
                    return
                writer.write(json.dumps(await self._answer(line)).encode() + b"\n")
                await writer.drain()
            writer.write(b'{"closing":true}\n')  # the next request was not read: not done
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("a request is a JSON object")
            return await self._handler(message)
        except Exception as exc:  # a bad request never harms the daemon
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._idle):  # those in the middle of a request finish it first
            task.cancel()

    async def wait_closed(self, timeout: float = 30.0) -> None:
        import asyncio

        if self._server is not None:
            await self._server.wait_closed()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=timeout)


async def serve(path: Path, handler: Handler) -> ControlServer:
    """Listen on ``path`` (mode 0600) and answer each request line with ``handler``."""
    import asyncio

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    control = ControlServer(handler)
    old_umask = os.umask(0o177)
    try:
        control._server = await asyncio.start_unix_server(control._connection,
                                                          path=os.fspath(path),
                                                          limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return control
