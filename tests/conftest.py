"""Shared fixtures: a real SQLite file in a temp dir, a fake clock, and helpers to run a service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from durablectl import SqliteStore
from durablectl.testing import FakeClock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "durable.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["kept", "replayed"])
def cache_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test twice: with the default cache (parked runs kept in memory and resumed) and
    with ``cache_size = 0`` (every wake-up replays from the database). Both must behave the
    same. Modules opt in with ``pytestmark = pytest.mark.usefixtures("cache_mode")``."""
    if request.param == "replayed":
        from durablectl.service import DurableService

        defaults = DurableService.__init__.__kwdefaults__
        assert defaults is not None and "cache_size" in defaults
        monkeypatch.setitem(defaults, "cache_size", 0)
    return str(request.param)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll a condition on the event loop (short real time; tests stay well under a second)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def isolate_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_name: str) -> Path:
    """A database path (not created) and a process environment of tmp dirs: no config file,
    no daemon, and nothing of the user's. Shared by the command-line test files."""
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        folder = tmp_path / "xdg" / name.lower()
        folder.mkdir(parents=True, mode=0o700)
        monkeypatch.setenv(name, str(folder))
    for name in ("DURABLECTL_DB", "DURABLECTL_CONFIG", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path / db_name

