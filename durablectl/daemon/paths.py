"""Where a database's daemon keeps its pid, log and socket files.

Each file is named after a short hash of the database's real path, so several databases (and
tests) can each have a daemon. Importing this module is cheap: the CLI uses it on every
command that may nudge a daemon."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOCKET_PATH_LIMIT = 100  # AF_UNIX paths are limited to ~108 bytes; keep a margin


@dataclass(frozen=True)
class DaemonPaths:
    database: Path
    key: str
    pid_file: Path
    log_file: Path
    socket: Path


def database_key(database: str | os.PathLike[str]) -> str:
    real = os.path.realpath(os.fspath(database))
    return hashlib.sha256(real.encode()).hexdigest()[:12]


def _state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("durablectl"))


def _runtime_dir() -> Path | None:
    """``$XDG_RUNTIME_DIR/durablectl`` when that exists and is writable (platformdirs would
    warn and fall back to /tmp when it is not set; we fall back to the state dir instead)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        return Path(base) / "durablectl"
    return None


def daemon_paths(database: str | os.PathLike[str], *, log_file: str | None = None) -> DaemonPaths:
    """The paths for the daemon of ``database`` (``log_file`` from the configuration wins)."""
    key = database_key(database)
    state = _state_dir()
    socket_dir = _runtime_dir() or state
    socket = socket_dir / f"d-{key}.sock"
    if len(os.fsencode(socket)) >= SOCKET_PATH_LIMIT:
        socket = Path(f"/tmp/durablectl-{os.getuid()}") / f"d-{key}.sock"
    return DaemonPaths(
        database=Path(os.path.realpath(os.fspath(database))),
        key=key,
        pid_file=state / f"daemon-{key}.pid",
        log_file=Path(log_file) if log_file else state / f"daemon-{key}.log",
        socket=socket,
    )


def ensure_private_dir(path: Path) -> None:
    """Create a folder readable by its owner only (pid, log and socket live there)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def socket_for(database: str, store: Any = None) -> Path | None:
    """The socket of the database's daemon: from the paths, else as the daemon recorded it in
    the database (a client run with another environment, such as cron or sudo)."""
    paths = daemon_paths(database)
    if paths.socket.exists():
        return paths.socket
    if store is not None:
        recorded = store.get_meta("daemon.socket")
        if recorded and Path(recorded).exists():
            return Path(recorded)
    return None
