"""Daemon control over a Unix socket: one JSON object per line each way.

Requests are ``{"op": "nudge" | "status" | "stop"}``. A nudge tells the daemon that another
process committed work (a start, a signal, a cancel): it only saves latency, since the daemon
also notices other processes' commits through ``PRAGMA data_version``. The client side uses
plain sockets so that the CLI never imports asyncio."""

from __future__ import annotations

import contextlib
import json
import os
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
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if not data:
            raise DaemonNotRunning(f"the daemon on {path} closed the connection")
        answer: dict[str, Any] = json.loads(data)
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


async def serve(path: Path, handler: Handler) -> Any:
    """Listen on ``path`` (mode 0600) and answer each request line with ``handler``."""
    import asyncio

    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection: answer it and close."""
        try:
            line = await reader.readline()
            if line:
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("a request is a JSON object")
                    answer = await handler(message)
                except Exception as exc:  # a bad request never harms the daemon
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(connection, path=os.fspath(path),
                                                 limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server
