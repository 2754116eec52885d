"""The bridge between the event loop and the grouped writer (durablectl/bridge.py): a write
awaited on the loop gets its result or its error after the commit, many writes of one batch
all arrive, and a write whose awaiting task gave up before the writer took it is never run."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from durablectl.bridge import FutureBridge
from durablectl.errors import ExecutionNotFound
from durablectl.store.sqlite import SqliteStore

T0 = 1_900_000_000.0
WF = "orders.v1"


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    opened = SqliteStore(tmp_path / "bridge.db")
    yield opened  # type: ignore[misc]
    opened.close()


def create_kwargs(execution_id: str) -> dict[str, object]:
    return {"execution_id": execution_id, "workflow_id": WF, "input_json": None,
            "max_attempts": 3, "retry_backoff": 2.0, "now": T0}


def test_writes_awaited_on_the_loop_get_their_results_and_errors(store: SqliteStore) -> None:
    async def main() -> None:
        bridge = FutureBridge(store, asyncio.get_running_loop())
        created = await asyncio.gather(*(
            bridge.call(store.create_execution, **create_kwargs(f"ex-{i}"))
            for i in range(50)))
        assert created == [(f"ex-{i}", True) for i in range(50)]
        with pytest.raises(ExecutionNotFound):
            await bridge.call(store.cancel_execution, "missing", reason=None, now=T0)

    asyncio.run(main())
    assert len(store.list_executions(limit=100)) == 50


@pytest.mark.full_level
def test_a_write_given_up_before_the_writer_took_it_is_not_run(store: SqliteStore) -> None:
    started, gate = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        assert gate.wait(5)

    async def main() -> None:
        bridge = FutureBridge(store, asyncio.get_running_loop())
        blocker = bridge.call(block)
        await asyncio.to_thread(started.wait, 5)  # the writer is busy with it
        abandoned = asyncio.ensure_future(
            bridge.call(store.create_execution, **create_kwargs("ex-abandoned")))
        kept = bridge.call(store.create_execution, **create_kwargs("ex-kept"))
        await asyncio.sleep(0)
        abandoned.cancel()
        gate.set()
        await blocker
        assert await kept == ("ex-kept", True)
        assert abandoned.cancelled()

    asyncio.run(main())
    assert store.get_execution("ex-kept") is not None
    assert store.get_execution("ex-abandoned") is None
