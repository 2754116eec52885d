from __future__ import annotations

from durablectl import DurableService, Signal, SqliteStore, workflow
from durablectl.testing import FakeClock

from .conftest import run, until

calls: list[str] = []
Approved = Signal("approved")


@workflow("smoke.v1")
async def smoke(ctx, order):
    a = await ctx.step("a", lambda: calls.append("a") or 1)
    await ctx.sleep(60, step_id="nap")
    answer = await ctx.wait_for_signal(Approved, step_id="approval")
    b = await ctx.step("b", lambda: calls.append("b") or a + 1)
    return {"a": a, "b": b, "answer": answer, "order": order}


def test_smoke(store: SqliteStore, clock: FakeClock) -> None:
    calls.clear()

    async def main() -> None:
        async with DurableService(store, [smoke], clock=clock) as service:
            eid = await service.start_execution(smoke, {"id": 7})
            await until(lambda: store.get_execution(eid).status == "sleeping")
            clock.advance(61)
            await until(lambda: store.get_execution(eid).status == "waiting")
            await service.signal(eid, Approved, {"ok": True})
            result = await service.wait(eid, timeout=5)
            assert result == {"a": 1, "b": 2, "answer": {"ok": True}, "order": {"id": 7}}
    run(main())
    assert calls == ["a", "b"]
