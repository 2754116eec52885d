"""Inspection: records, JSON shapes, the operator's detail, and bad definitions."""

from __future__ import annotations

import json

import pytest

from durablectl import (
    DurableOperator,
    DurableService,
    ExecutionNotFound,
    SqliteStore,
    workflow,
)
from durablectl.model import to_json

from .conftest import run


@workflow("inspect.two")
async def two(ctx, n):
    await ctx.step("one", lambda: n)
    await ctx.note("half way")
    return await ctx.step("two", lambda: n * 2)


def test_operator_detail_has_execution_steps_and_audit_in_order(store: SqliteStore) -> None:
    async def main() -> str:
        async with DurableService(store, [two]) as service:
            eid = await service.start_execution(two, 4)
            assert await service.wait(eid, timeout=5) == 8
            return eid
    eid = run(main())
    operator = DurableOperator(store)
    detail = operator.get_execution_detail(eid)
    assert detail.execution.status == "completed" and detail.execution.result == 8
    assert [s.step_id for s in detail.steps] == ["one", "__note:0", "two"]
    assert all(s.duration_ms is not None and s.duration_ms >= 0 for s in detail.steps)
    transitions = [(a.data["from"], a.data["to"]) for a in detail.audit
                   if a.kind == "execution_status_changed"]
    assert transitions == [(None, "pending"), ("pending", "running"), ("running", "completed")]
    seqs = [a.seq for a in detail.audit]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    shape = to_json(detail)
    text = json.dumps(shape)
    assert shape["execution"]["created_at"].endswith("Z")
    assert set(shape["execution"]) >= {
        "execution_id", "workflow_id", "status", "status_reason", "attempt", "max_attempts",
        "input", "result", "error", "created_at", "updated_at"}
    assert set(shape["steps"][0]) >= {"step_id", "kind", "result", "error", "started_at",
                                      "completed_at", "duration_ms", "attempt"}
    assert set(shape["audit"][0]) >= {"seq", "at", "kind", "execution_id", "attempt", "data"}
    assert "+00:00" not in text
    assert [e.execution_id for e in operator.list_executions(status="completed")] == [eid]
    assert operator.list_executions(workflow="other") == []
    with pytest.raises(ExecutionNotFound):
        operator.get_execution_detail("missing")


def test_bad_definitions_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="async def"):
        workflow("sync.one")(lambda ctx, data: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        workflow("")
    with pytest.raises(ValueError, match="max_attempts"):
        workflow("x", max_attempts=0)
    with pytest.raises(TypeError, match="Workflow"):
        DurableService(None, [object()])  # type: ignore[arg-type, list-item]


def test_non_json_input_names_the_workflow_and_stores_nothing(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [two]) as service:
            with pytest.raises(Exception, match=r"input of workflow .inspect\.two."):
                await service.start_execution(two, {"when": object()})
    run(main())
    assert store.list_executions() == []
