"""A pytest plugin for `make test-normal`: every SqliteStore made in the run defaults to
synchronous NORMAL, so that every service, engine and daemon test writes through the commits on
the loop (store/sqlite_loop.py). Tests marked ``full_level`` assert FULL's own behaviour (its
default, its writer thread) and are skipped."""

from __future__ import annotations

from typing import Any

import pytest

import durablectl.store.sqlite as sqlite_store

_original_init = sqlite_store.SqliteStore.__init__


def _init(self: Any, path: Any, *, synchronous: str = "NORMAL",
          busy_timeout_ms: int = 5000) -> None:
    _original_init(self, path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)


sqlite_store.SqliteStore.__init__ = _init  # type: ignore[method-assign]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="asserts synchronous FULL's own behaviour")
    for item in items:
        if item.get_closest_marker("full_level"):
            item.add_marker(skip)
