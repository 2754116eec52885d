"""A real ``durablectl daemon run`` child process for the benchmarks, in its own folder.

The daemon gets a config file, a workflows folder and XDG state/config/data/runtime dirs of its
own (as tests/test_daemon.py does), so its pid, log and socket files never meet a user's. It
reports readiness on a pipe (``--ready-fd``, what ``daemon start`` uses), so the time to ready
is measured without polling; its memory is read from ``/proc/PID/status``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cli import durablectl_command
from durablectl.daemon import ipc
from durablectl.daemon.process import read_ready_line


class DaemonProcess:
    """One daemon child: ``start`` (returns seconds to ready), ``memory``, ``status``, ``stop``."""

    def __init__(self, folder: Path, database: Path, workflows: Path, *,
                 synchronous: str, daemon_options: str = "") -> None:
        self.folder = folder
        self.database = database
        self.config = folder / "durablectl.toml"
        self.config.write_text(f'workflows = "{workflows}"\n[daemon]\ngrace_seconds = 5\n'
                               f'{daemon_options}\n[sqlite]\nsynchronous = "{synchronous}"\n')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLECTL_")}
        for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            path = folder / name.lower()
            path.mkdir(mode=0o700, exist_ok=True)
            self.env[name] = str(path)
        # the socket lives here: a short path of its own, whatever ``folder`` is
        self.runtime = Path(tempfile.mkdtemp(prefix="dctl-bench-"))
        self.env["XDG_RUNTIME_DIR"] = str(self.runtime)
        self.log = folder / "daemon.log"
        self.child: subprocess.Popen[bytes] | None = None
        self._socket: Path | None = None

    @property
    def pid(self) -> int:
        assert self.child is not None, "the daemon is not running"
        return self.child.pid

    def start(self, timeout: float = 120.0) -> float:
        """Start ``daemon run`` and wait for its ``ready`` line; returns the seconds it took
        (interpreter start, imports, loading workflows, recovery, socket listening)."""
        read_end, write_end = os.pipe()
        command = [sys.executable, "-m", "durablectl", "daemon", "run", "--db",
                   str(self.database), "--config", str(self.config), "--ready-fd",
                   str(write_end)]
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.child = subprocess.Popen(command, env=self.env, cwd=self.folder,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          pass_fds=(write_end,))
        os.close(write_end)
        try:
            line = read_ready_line(read_end, timeout) or ""
        finally:
            os.close(read_end)
        elapsed = time.perf_counter() - started
        if not line.startswith("ready"):
            self.kill()
            raise RuntimeError(f"the daemon did not become ready ({line or 'no answer'}); "
                               f"log: {self._log_tail()}")
        return elapsed

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (resident now) and VmHWM (the peak resident size so far) in MB."""
        found: dict[str, float] = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) / 1024.0  # kB
        return found

    def cpu_s(self) -> float:
        """CPU seconds the daemon has used (user + system, all threads)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def socket(self) -> Path:
        """The socket path, as the daemon recorded it in its database once ready."""
        if self._socket is None:
            conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'daemon.socket'"
                                   ).fetchone()
            finally:
                conn.close()
            if row is None:
                raise RuntimeError("the daemon recorded no socket")
            self._socket = Path(row[0])
        return self._socket

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A ``durablectl`` command against this daemon's database, in its environment."""
        return subprocess.run([*durablectl_command(), *args, "--db", str(self.database),
                               "--config", str(self.config)], env=self.env, cwd=self.folder,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def nudge(self) -> None:
        ipc.nudge(self.socket())

    def status(self) -> dict[str, Any]:
        return ipc.request(self.socket(), "status", timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop, as ``daemon stop`` asks) and wait; returns the exit code."""
        if self.child is None:
            return 0
        self.child.send_signal(signal.SIGTERM)
        try:
            code = self.child.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the daemon did not stop in {timeout:g}s") from None
        self.child = None
        self._socket = None
        shutil.rmtree(self.runtime, ignore_errors=True)
        return code

    def kill(self) -> None:
        """Only for a daemon that failed: SIGKILL this child (never any other process)."""
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.wait(10)
        self.child = None
        shutil.rmtree(self.runtime, ignore_errors=True)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""


