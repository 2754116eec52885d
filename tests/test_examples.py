"""The example workflows (``workflows_example/``) run end to end on a real SQLite file, with a fake
clock for their days-long waits, and every durable call has an explicit id."""

from __future__ import annotations

import ast
import importlib.util
import sys
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durablectl import (
    DurableService,
    ExecutionFailed,
    ExecutionNotActive,
    SqliteStore,
    Workflow,
)
from durablectl.testing import FakeClock

from .conftest import run, until

EXAMPLES = Path(__file__).resolve().parent.parent / "workflows_example"
EXPECTED_IDS = {"orders.fulfil.v1", "users.onboard.v1", "reports.nightly.v1",
                "pipeline.wordcount.v1"}


def load(path: Path, name: str | None = None) -> ModuleType:
    """Import a workflow file by path, as the daemon does (no package, no sys.path change)."""
    name = name or f"examples_under_test.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


orders = load(EXAMPLES / "orders.py")
onboarding = load(EXAMPLES / "onboarding.py")
reports = load(EXAMPLES / "reports.py")
pipeline = load(EXAMPLES / "pipeline.py")


def service(store: SqliteStore, clock: FakeClock, *workflows: Workflow) -> DurableService:
    # "error": any sleep, wait or emit without an explicit step_id would fail the execution
    return DurableService(store, workflows, clock=clock, implicit_step_ids="error")


def steps_of(store: SqliteStore, eid: str) -> list[tuple[str, str]]:
    return [(s.step_id, s.kind) for s in store.list_step_results(eid)]


async def parked_after(store: SqliteStore, eid: str, step_id: str, status: str) -> None:
    """Until ``step_id`` is stored and the execution has parked again (``status``)."""
    await until(lambda: store.get_execution(eid).status == status and
                any(s.step_id == step_id for s in store.list_step_results(eid)))


def notes_of(store: SqliteStore, eid: str) -> list[str]:
    return [a.data["message"] for a in store.list_audit_entries(eid) if a.kind == "note"]


# the folder ----------------------------------------------------------------------------------

def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (the daemon loads files)"
            names.add((node.module or "").split(".")[0])
    return names


def test_every_module_imports_cleanly_and_declares_distinct_workflows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(EXAMPLES.glob("*.py"))
    assert {f.stem for f in files} == {"orders", "onboarding", "reports", "pipeline"}
    monkeypatch.chdir(tmp_path)  # a module that writes a file at import would show here
    ids: list[str] = []
    names: list[str] = []
    for file in files:
        third_party = _top_level_imports(file) - set(sys.stdlib_module_names) - {
            "__future__", "durablectl"}
        assert not third_party, f"{file.name} imports {third_party}"
        module = load(file, f"examples_clean_import.{file.stem}")
        found = [v for v in vars(module).values() if isinstance(v, Workflow)]
        assert found, f"{file.name} declares no Workflow"
        for wf in found:
            ids.append(wf.id)
            names += [wf.id, *([wf.alias] if wf.alias else [])]
        sys.modules.pop(f"examples_clean_import.{file.stem}", None)
    assert set(ids) == EXPECTED_IDS
    assert len(names) == len(set(names)), f"ids and aliases collide: {sorted(names)}"
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr() == ("", "")


def test_the_report_declares_its_nightly_cron_schedule() -> None:
    schedule = reports.nightly.schedule
    assert schedule is not None and schedule.cron == "0 3 * * *"
    assert schedule.interval_seconds is None


# orders.fulfil.v1 ----------------------------------------------------------------------------

ORDER = {"id": "A-1", "amount": 30, "items": [{"sku": "MUG-01", "qty": 2}],
         "shipping": "express", "flaky_payment": 1}


def test_order_happy_path_approved_shipped_delivered(store: SqliteStore,
                                                     clock: FakeClock) -> None:
    shipped: list[Any] = []

    async def main() -> None:
        async with service(store, clock, orders.fulfil) as svc:
            svc.on(orders.Shipped, shipped.append)
            eid = await svc.start_execution("orders.fulfil", ORDER)  # by its alias
            assert store.get_execution(eid).workflow_id == "orders.fulfil.v1"
            await parked_after(store, eid, "charge-payment", "waiting")
            clock.advance(timedelta(hours=5))
            await svc.signal(eid, orders.Approved, {"by": "ann"})
            await parked_after(store, eid, "notify-shipped", "waiting")
            await until(lambda: shipped)
            result = await _deliver(svc, eid)
            assert result["status"] == "delivered"
            assert result["approved_by"] == "ann"
            assert result["order"] == "A-1"
            assert result["charge"]["amount"] == 30
            assert result["charge"]["id"].startswith("ch_")
            assert result["shipment"]["carrier"] == "ups"  # the express branch
            assert result["delivery"] == {"signed_by": "J. Doe"}
            assert shipped == [{"order": "A-1", **result["shipment"]}]
            assert steps_of(store, eid) == [
                ("reserve-stock", "step"), ("charge-payment", "step"), ("approval", "signal"),
                ("ship", "switch"), ("notify-shipped", "emit"), ("__note:0", "note"),
                ("delivery", "signal"), ("__note:1", "note")]
            stored = {s.step_id: s.result for s in store.list_step_results(eid)}
            # the flaky gateway failed once; the in-process retry charged it, once
            assert stored["charge-payment"]["gateway_calls"] == 2
            assert stored["charge-payment"]["idempotency_key"] == f"{eid}:charge"
            assert stored["reserve-stock"]["units"] == 2
            assert notes_of(store, eid) == ["order shipped", "order delivered"]
            switched = [a.data for a in store.list_audit_entries(eid)
                        if a.kind == "switch_evaluated"]
            assert switched == [{"step_id": "ship", "branch": "express"}]
    run(main())


async def _deliver(svc: DurableService, eid: str) -> Any:
    await svc.signal(eid, orders.Delivered, {"signed_by": "J. Doe"})
    return await svc.wait(eid, timeout=5)


def test_order_signals_sent_early_are_buffered(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, orders.fulfil) as svc:
            eid = await svc.start_execution(orders.fulfil, {"id": 7, "amount": 12.5})
            await svc.signal(eid, "approved", None)  # an empty approval approves
            result = await _deliver(svc, eid)
            assert result["status"] == "delivered" and result["order"] == "7"
            assert result["shipment"]["carrier"] == "dhl"  # the default branch
            with pytest.raises(ExecutionNotActive):
                await svc.signal(eid, "approved", {"by": "late"})
    run(main())


def test_order_approval_timeout_rolls_back_in_reverse_order(store: SqliteStore,
                                                            clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, orders.fulfil) as svc:
            eid = await svc.start_execution(orders.fulfil, {**ORDER, "flaky_payment": 0})
            await parked_after(store, eid, "charge-payment", "waiting")
            clock.advance(timedelta(days=1))
            assert store.get_execution(eid).status == "waiting"
            clock.advance(timedelta(days=1, seconds=1))
            result = await svc.wait(eid, timeout=5)
            assert result == {"status": "expired", "order": "A-1",
                              "refunded": {"amount": 30, "currency": "EUR"}}
            steps = store.list_step_results(eid)
            assert [(s.step_id, s.kind) for s in steps] == [
                ("reserve-stock", "step"), ("charge-payment", "step"), ("approval", "signal"),
                ("rollback:charge-payment", "rollback"), ("rollback:reserve-stock", "rollback"),
                ("__note:0", "note")]
            by_id = {s.step_id: s.result for s in steps}
            assert by_id["approval"] == {"kind": "timeout"}
            charge_id = by_id["charge-payment"]["charge_id"]
            assert by_id["rollback:charge-payment"]["refund_id"] == "re_" + charge_id[3:]
            assert by_id["rollback:reserve-stock"] == {
                "released": by_id["reserve-stock"]["reservation_id"], "units": 2}
            assert notes_of(store, eid) == ["order expired"]
    run(main())


def test_order_rejection_rolls_back(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, orders.fulfil) as svc:
            eid = await svc.start_execution(orders.fulfil, {"id": "B-2", "amount": 99})
            await svc.signal(eid, orders.Approved,
                             {"by": "bob", "approved": False, "reason": "fraud"})
            result = await svc.wait(eid, timeout=5)
            assert result == {"status": "rejected", "order": "B-2", "by": "bob",
                              "reason": "fraud", "refunded": {"amount": 99, "currency": "EUR"}}
            rollbacks = [sid for sid, kind in steps_of(store, eid) if kind == "rollback"]
            assert rollbacks == ["rollback:charge-payment", "rollback:reserve-stock"]
    run(main())


def test_order_payment_that_keeps_failing_releases_the_stock(store: SqliteStore,
                                                             clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, orders.fulfil) as svc:
            result = await svc.execute(orders.fulfil, {"id": "C-3", "amount": 5,
                                                       "flaky_payment": 3}, wait_timeout=5)
            assert result["status"] == "payment_failed"
            assert "simulated failure 3" in result["error"]
    run(main())
    steps = store.list_step_results(store.list_executions()[0].execution_id)
    assert [(s.step_id, s.kind) for s in steps] == [
        ("reserve-stock", "step"), ("charge-payment", "step"),
        ("rollback:reserve-stock", "rollback"), ("__note:0", "note")]
    assert steps[1].error is not None and steps[1].error.type == "ConnectionError"


def test_order_with_bad_input_is_refused_without_side_effects(store: SqliteStore,
                                                               clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, orders.fulfil) as svc:
            eid = await svc.start_execution(orders.fulfil, {"id": "", "amount": -1})
            result = await svc.wait(eid, timeout=5)
            assert result["status"] == "invalid" and len(result["problems"]) == 2
            assert steps_of(store, eid) == [("__note:0", "note")]
    run(main())


# users.onboard.v1 ----------------------------------------------------------------------------

def test_onboarding_stops_reminding_when_the_user_activates(store: SqliteStore,
                                                            clock: FakeClock) -> None:
    activated: list[Any] = []

    async def main() -> None:
        async with service(store, clock, onboarding.onboard) as svc:
            svc.on(onboarding.UserActivated, activated.append)
            eid = await svc.start_execution("users.onboard",
                                            {"email": "ann@example.com", "plan": "pro"})
            await parked_after(store, eid, "plan-setup", "waiting")
            clock.advance(timedelta(days=1, seconds=1))  # day 1: no activation yet
            await parked_after(store, eid, "reminder-day-1", "waiting")
            clock.advance(timedelta(days=1))  # day 2: activates between reminders
            await svc.signal(eid, onboarding.Activated, {"via": "web"})
            await parked_after(store, eid, "announce-activation", "sleeping")
            clock.advance(timedelta(days=1))  # the settle-in sleep
            result = await svc.wait(eid, timeout=5)
            assert result["status"] == "activated"
            assert result["reminders_sent"] == [1]
            assert result["activation"] == {"via": "web"}
            assert result["plan"] == {"plan": "pro", "seats": 1, "trial_days": 14}
            assert result["tips"].startswith("msg_")
            assert activated == [{"email": "ann@example.com", "plan": "pro", "via": "web"}]
            assert steps_of(store, eid) == [
                ("send-welcome", "step"), ("plan-setup", "switch"), ("__note:0", "note"),
                ("activation-by-day-1", "signal"), ("reminder-day-1", "step"),
                ("activation-by-day-3", "signal"), ("announce-activation", "emit"),
                ("__note:1", "note"), ("settle-in", "sleep"), ("send-tips", "step")]
            stored = {s.step_id: s.result for s in store.list_step_results(eid)}
            assert stored["reminder-day-1"]["template"] == "trial-reminder-day-1"
            assert stored["activation-by-day-3"] == {"kind": "signal",
                                                     "payload": {"via": "web"}}
            assert notes_of(store, eid) == ["plan set up", "user activated"]
    run(main())


def test_onboarding_without_activation_sends_every_reminder(store: SqliteStore,
                                                            clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, onboarding.onboard) as svc:
            eid = await svc.start_execution(onboarding.onboard, {"email": "bob@example.com"})
            await parked_after(store, eid, "plan-setup", "waiting")
            for day, gap in ((1, 1), (3, 2)):
                clock.advance(timedelta(days=gap, seconds=1))
                await parked_after(store, eid, f"reminder-day-{day}", "waiting")
            clock.advance(timedelta(days=4, seconds=1))
            result = await svc.wait(eid, timeout=5)
            assert result["status"] == "dormant"
            assert result["reminders_sent"] == [1, 3, 7]
            assert result["plan"] == {"plan": "free", "seats": 1, "trial_days": 0}
            kinds = dict(steps_of(store, eid))
            assert [sid for sid in kinds if sid.startswith("reminder-")] == [
                "reminder-day-1", "reminder-day-3", "reminder-day-7"]
            assert "settle-in" not in kinds and kinds["mark-dormant"] == "step"
            assert notes_of(store, eid) == ["plan set up", "user never activated"]
            with pytest.raises(ExecutionNotActive):
                await svc.signal(eid, onboarding.Activated, {"via": "too late"})
    run(main())


def test_onboarding_activation_before_the_first_wait_and_an_unknown_plan(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, onboarding.onboard) as svc:
            eid = await svc.start_execution(onboarding.onboard,
                                            {"email": "cem@example.com", "plan": "Enterprise"})
            await svc.signal(eid, "activated", "sso")  # buffered until the first wait
            await parked_after(store, eid, "announce-activation", "sleeping")
            clock.advance(timedelta(days=1))
            result = await svc.wait(eid, timeout=5)
            assert result["status"] == "activated" and result["reminders_sent"] == []
            assert result["activation"] == {"payload": "sso"}
            assert result["plan"]["sales_contact"] is True  # the default branch
            branches = [a.data["branch"] for a in store.list_audit_entries(eid)
                        if a.kind == "switch_evaluated"]
            assert branches == ["sales"]
    run(main())


# reports.nightly.v1 --------------------------------------------------------------------------

def test_nightly_report_from_its_input(store: SqliteStore, clock: FakeClock) -> None:
    ready: list[Any] = []
    params = {"date": "2030-01-01", "channel": "#sales", "orders": [
        {"id": 1, "customer": "ann", "amount": 10, "status": "paid"},
        {"id": 2, "customer": "bob", "amount": 25.5, "status": "delivered"},
        {"id": 3, "customer": "ann", "amount": 20, "status": "shipped"},
        {"id": 4, "customer": "cem", "amount": 99, "status": "refunded"}]}

    async def main() -> None:
        async with service(store, clock, reports.nightly) as svc:
            svc.on(reports.ReportReady, ready.append)
            eid = await svc.start_execution("reports.nightly", params)
            result = await svc.wait(eid, timeout=5)
            assert result["report_id"] == "nightly-2030-01-01"
            assert result["channel"] == "#sales"
            assert result["summary"] == {
                "orders": 4, "by_status": {"delivered": 1, "paid": 1, "refunded": 1,
                                           "shipped": 1},
                "revenue": 55.5, "average_order": 18.5,
                "top_customers": [{"customer": "ann", "revenue": 30.0},
                                  {"customer": "bob", "revenue": 25.5}]}
            assert result["text"].splitlines()[:3] == [
                "Nightly report 2030-01-01", "orders   4", "revenue  55.50"]
            assert ready == [{"report_id": "nightly-2030-01-01", "date": "2030-01-01",
                              "revenue": 55.5}]
            assert steps_of(store, eid) == [
                ("report-date", "step"), ("load-orders", "step"), ("summarise", "step"),
                ("render", "step"), ("publish", "step"), ("announce", "emit"),
                ("__note:0", "note")]
    run(main())


def test_nightly_report_with_no_input_uses_the_sample(store: SqliteStore,
                                                      clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, reports.nightly) as svc:
            result = await svc.execute(reports.nightly, None, wait_timeout=5)
            date.fromisoformat(result["date"])  # yesterday, whatever today is
            assert result["channel"] == "#reports"
            assert result["summary"]["orders"] == len(reports.SAMPLE_ORDERS)
            assert result["summary"]["revenue"] == 141.5  # paid + shipped + delivered
            assert result["summary"]["top_customers"][0] == {"customer": "ann",
                                                             "revenue": 129.0}
    run(main())


# pipeline.wordcount.v1 -----------------------------------------------------------------------

def test_wordcount_of_text(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, pipeline.wordcount) as svc:
            result = await svc.execute(
                "pipeline.wordcount.v1",
                {"text": "The cat sat.\nThe cat's hat, the end!\n", "top": 2}, wait_timeout=5)
            assert result == {
                "lines": 2, "words": 8, "unique": 6, "characters": 35,
                "top": [{"word": "the", "count": 3}, {"word": "cat", "count": 1}],
                "counts": {"the": 3, "cat": 1, "cat's": 1, "end": 1, "hat": 1, "sat": 1}}
    run(main())


def test_wordcount_of_many_lines_counts_chunks_concurrently(store: SqliteStore,
                                                            clock: FakeClock) -> None:
    lines = [f"alpha beta line{n % 3}" for n in range(pipeline.CHUNK_LINES * 2 + 1)]

    async def main() -> None:
        async with service(store, clock, pipeline.wordcount) as svc:
            eid = await svc.start_execution(pipeline.wordcount, lines)  # a bare list of lines
            result = await svc.wait(eid, timeout=5)
            total = len(lines)
            assert result["lines"] == total and result["words"] == 3 * total
            assert result["top"][:2] == [{"word": "alpha", "count": total},
                                         {"word": "beta", "count": total}]
            assert result["counts"]["line0"] == 334 and result["unique"] == 5
            chunks = sorted(sid for sid, _ in steps_of(store, eid) if sid.startswith("count-"))
            assert chunks == ["count-chunk-0", "count-chunk-1", "count-chunk-2"]
            # case_sensitive keeps "Alpha" and "alpha" apart
            same = await svc.execute(pipeline.wordcount, {"lines": ["Alpha alpha"],
                                                          "case_sensitive": True}, wait_timeout=5)
            assert same["counts"] == {"Alpha": 1, "alpha": 1}
    run(main())


def test_wordcount_refuses_bad_input_at_once(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with service(store, clock, pipeline.wordcount) as svc:
            eid = await svc.start_execution(pipeline.wordcount, {"words": 3})
            with pytest.raises(ExecutionFailed):
                await svc.wait(eid, timeout=5)
            execution = store.get_execution(eid)
            assert execution.status == "failed" and execution.attempt == 1
            assert "expected" in execution.error.message
    run(main())
