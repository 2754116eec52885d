"""Events (SPEC §3 ``on``, §7 ``[hooks] on_event``): in-process subscribers get every durable
event kind a workflow produces and each emit once; a subscriber that raises never breaks a
workflow; the daemon's hook forwards each event to a shell command as one JSON line.

The hook tests run real shell commands (``cat >> FILE``, ``sleep``, ``exit 3``); every wait is on
a condition, and the slow commands are killed by the hook under test within a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durablectl import (
    Branch,
    DurableService,
    Event,
    Signal,
    SqliteStore,
    durable_events,
    workflow,
)
from durablectl.daemon.hooks import EventHook, durable_message, event_message
from durablectl.events import DurableEventRecord
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay

Go = Signal("go")
Shipped = Event("order.shipped")

KINDS = sorted(durable_events.ALL - {durable_events.audit_appended,
                                     durable_events.operator_action})


@workflow("ev.tour")
async def tour(ctx, value):
    doubled = await ctx.step("double", lambda: value * 2)
    await ctx.emit(Shipped, {"order": value}, step_id="notify")
    await ctx.note("shipped", {"carrier": "dhl"})
    size = await ctx.switch("size", doubled, [
        Branch("small", lambda v: v < 10, lambda v: f"small {v}"),
        Branch("big", lambda v: v >= 10, lambda v: f"big {v}"),
    ])
    await ctx.sleep(60, step_id="nap")
    got = await ctx.wait_for_signal(Go, step_id="go")
    late = await ctx.wait_for_signal(Go, step_id="late", timeout=30)
    return {"size": size, "got": got, "late": late.kind}


@workflow("ev.quick")
async def quick(ctx, value):
    await ctx.step("one", lambda: value)
    await ctx.emit(Shipped, {"order": value}, step_id="notify")
    await ctx.note("done")
    return value


class Collector:
    """One list of records per durable kind (and every record, from ``audit_appended``)."""

    def __init__(self, service: DurableService) -> None:
        self.by_kind: dict[str, list[DurableEventRecord]] = defaultdict(list)
        self.every: list[DurableEventRecord] = []
        for kind in KINDS:
            service.on(kind, self.by_kind[kind].append)
        service.on(durable_events.audit_appended, self.every.append)

    def of(self, execution_id: str) -> list[DurableEventRecord]:
        return [r for r in self.every if r.execution_id == execution_id]


async def drive_tour(service: DurableService, store: SqliteStore, clock: FakeClock,
                     value: int = 12) -> str:
    """Run ``ev.tour`` through each of its waits to completion."""
    eid = await service.start_execution(tour, value)
    await until(lambda: store.get_execution(eid).status == "sleeping")
    clock.advance(61)
    await until(lambda: store.get_execution(eid).status == "waiting")
    await service.signal(eid, Go, {"ok": True})
    await until(lambda: any(s.step_id == "go" for s in store.list_step_results(eid))
                and store.get_execution(eid).status == "waiting")
    clock.advance(31)
    size = "big" if value * 2 >= 10 else "small"
    assert await service.wait(eid, timeout=5) == {"size": f"{size} {value * 2}",
                                                  "got": {"ok": True}, "late": "timeout"}
    return eid


# -- in-process subscribers --------------------------------------------------------------------
def test_each_durable_event_kind_reaches_its_subscribers_with_its_data(
        store: SqliteStore, clock: FakeClock) -> None:
    emitted: list[Any] = []

    async def main() -> tuple[Collector, str]:
        async with DurableService(store, [tour], clock=clock, cache_size=0) as service:
            got = Collector(service)
            service.on(Shipped, emitted.append)
            return got, await drive_tour(service, store, clock)

    got, eid = run(main())
    for kind in KINDS:
        assert got.by_kind[kind], f"no {kind} event"
        assert all(isinstance(r, DurableEventRecord) and r.kind == kind and r.execution_id == eid
                   for r in got.by_kind[kind])
    data = {kind: [r.data for r in records] for kind, records in got.by_kind.items()}
    statuses = [(d["from"], d["to"]) for d in data["execution_status_changed"]]
    assert statuses[0] == (None, "pending") and statuses[-1] == ("running", "completed")
    assert {to for _, to in statuses} >= {"pending", "running", "sleeping", "waiting",
                                          "completed"}
    [step] = data["step_completed"]
    assert step["step_id"] == "double" and step["internal"] is False and step["duration_ms"] >= 0
    [scheduled] = data["sleep_scheduled"]
    assert scheduled == {"step_id": "nap", "due_at": "2030-01-01T12:01:00Z"}
    assert data["sleep_completed"] == [{"step_id": "nap"}]
    assert data["signal_waiting"][0] == {"step_id": "go", "signal": "go", "timeout_at": None}
    assert data["signal_waiting"][-1]["step_id"] == "late"
    assert data["signal_waiting"][-1]["timeout_at"] is not None
    [delivered] = data["signal_delivered"]
    assert delivered["step_id"] == "go" and delivered["signal"] == "go"
    assert data["signal_timed_out"] == [{"step_id": "late", "signal": "go"}]
    assert data["emit_published"] == [{"step_id": "notify", "event": "order.shipped"}]
    assert data["switch_evaluated"] == [{"step_id": "size", "branch": "big"}]
    assert data["note"] == [{"message": "shipped", "meta": {"carrier": "dhl"}}]
    # audit_appended sees every entry once, in the order the audit trail has them
    audit = [(a.kind, a.data) for a in store.list_audit_entries(eid)]
    assert [(r.kind, r.data) for r in got.of(eid)] == audit
    assert emitted == [{"order": 12}]  # replayed four times (cache_size=0), emitted once


def test_events_are_published_with_audit_persistence_off(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> tuple[Collector, str]:
        async with DurableService(store, [tour], clock=clock, audit=False) as service:
            got = Collector(service)
            return got, await drive_tour(service, store, clock)

    got, eid = run(main())
    assert store.list_audit_entries(eid) == []
    assert {r.kind for r in got.of(eid)} == set(KINDS)


def test_async_subscribers_are_awaited(store: SqliteStore) -> None:
    records: list[DurableEventRecord] = []
    payloads: list[Any] = []
    any_events: list[tuple[str, Any]] = []

    async def on_record(record: DurableEventRecord) -> None:
        await asyncio.sleep(0)
        records.append(record)

    async def on_shipped(payload: Any) -> None:
        await asyncio.sleep(0)
        payloads.append(payload)

    async def on_any(event: Event, payload: Any) -> None:
        await asyncio.sleep(0)
        any_events.append((event.id, payload))

    async def main() -> str:
        async with DurableService(store, [quick]) as service:
            service.on(durable_events.audit_appended, on_record)
            service.on(Shipped, on_shipped)
            service.on_any_event(on_any)
            eid = await service.start_execution(quick, 3)
            assert await service.wait(eid, timeout=5) == 3
            await until(lambda: any(r.data.get("to") == "completed" for r in records))
            return eid

    eid = run(main())
    assert payloads == [{"order": 3}]
    assert any_events == [("order.shipped", {"order": 3})]
    assert [(r.kind, r.data) for r in records if r.execution_id == eid] == \
        [(a.kind, a.data) for a in store.list_audit_entries(eid)]


def test_raising_subscribers_are_logged_and_never_break_the_workflow(
        store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def sync_boom(_argument: Any) -> None:
        calls.append("sync")
        raise RuntimeError("sync subscriber broke")

    async def async_boom(_argument: Any) -> None:
        calls.append("async")
        raise RuntimeError("async subscriber broke")

    def any_boom(_event: Event, _payload: Any) -> None:
        raise ValueError("any-event subscriber broke")

    async def main() -> str:
        async with DurableService(store, [quick]) as service:
            for kind in durable_events.ALL:
                service.on(kind, sync_boom)
                service.on(kind, async_boom)
            service.on(Shipped, sync_boom)
            service.on(Shipped, async_boom)
            service.on_any_event(any_boom)
            eid = await service.start_execution(quick, 5)
            assert await service.wait(eid, timeout=5) == 5
            await until(lambda: "async subscriber broke" in caplog.text)
            return eid

    with caplog.at_level(logging.ERROR, logger="durablectl.service"):
        eid = run(main())
    assert store.get_execution(eid).status == "completed"
    assert [s.step_id for s in store.list_step_results(eid)] == ["one", "notify", "__note:0"]
    assert "sync" in calls and "async" in calls
    text = caplog.text
    assert "subscriber to durable:step_completed raised; ignored" in text
    assert "subscriber to event:order.shipped raised; ignored" in text
    assert "sync subscriber broke" in text and "async subscriber broke" in text
    assert "any-event subscriber broke" in text


def test_emits_are_delivered_once_and_never_again_on_replay_or_in_another_service(
        store: SqliteStore, clock: FakeClock) -> None:
    first: list[Any] = []
    first_any: list[str] = []
    second: list[Any] = []
    second_any: list[str] = []

    async def main() -> str:
        async with DurableService(store, [tour], clock=clock, cache_size=0) as service:
            service.on(Shipped, first.append)
            unsubscribe = service.on_any_event(lambda event, _p: first_any.append(event.id))
            eid = await service.start_execution(tour, 1)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            unsubscribe()
            service.on_any_event(lambda event, _p: first_any.append("again " + event.id))
        # another worker picks the execution up and replays the emit from its history
        async with DurableService(store, [tour], clock=clock, cache_size=0) as service:
            service.on(Shipped, second.append)
            service.on_any_event(lambda event, _p: second_any.append(event.id))
            clock.advance(61)
            await until(lambda: store.get_execution(eid).status == "waiting")
            await service.signal(eid, Go)
            await until(lambda: any(s.step_id == "go" for s in store.list_step_results(eid))
                        and store.get_execution(eid).status == "waiting")
            clock.advance(31)
            assert (await service.wait(eid, timeout=5))["size"] == "small 2"
        return eid

    run(main())
    assert first == [{"order": 1}] and first_any == ["order.shipped"]
    assert second == [] and second_any == []


def test_on_refuses_an_unknown_durable_event_kind(store: SqliteStore) -> None:
    service = DurableService(store, [])
    with pytest.raises(ValueError, match="unknown durable event"):
        service.on("step_finished", print)


# -- the hook forwarder ------------------------------------------------------------------------
def append_to(path: Path) -> str:
    return f"cat >> {shlex.quote(str(path))}"


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def hooks_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="durablectl.daemon.hooks"):
        yield caplog


def test_the_hook_message_shapes() -> None:
    record = DurableEventRecord("note", "e1", {"message": "hi", "meta": None})
    assert durable_message(record) == {"type": "durable", "kind": "note", "execution_id": "e1",
                                       "data": {"message": "hi", "meta": None}}
    assert event_message(Shipped, [1]) == {"type": "event", "event": "order.shipped",
                                           "payload": [1]}
    assert event_message("x.y", None) == {"type": "event", "event": "x.y", "payload": None}


def test_the_hook_writes_one_json_line_per_event_in_order(
        tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "events.jsonl"
    env_out = tmp_path / "env.txt"
    command = (f'printf "%s %s\\n" "$DURABLECTL_EVENT_TYPE" "$DURABLECTL_EVENT" >> '
               f'{shlex.quote(str(env_out))}; {append_to(out)}')
    hook = EventHook(command)
    hook.start()
    messages = [durable_message(DurableEventRecord("step_completed", "e1", {"step_id": "a"})),
                event_message(Shipped, {"order": "ü", "n": [1, 2]}),
                durable_message(DurableEventRecord("note", None, {"message": "x\ny"}))]
    for message in messages:
        hook.submit(message)
    hook.stop()
    raw = out.read_text(encoding="utf-8")
    assert raw.count("\n") == 3 and raw.endswith("\n")
    assert read_lines(out) == messages
    assert env_out.read_text().splitlines() == ["durable step_completed",
                                                "event order.shipped", "durable note"]
    assert (hook.delivered, hook.failed, hook.dropped) == (3, 0, 0)
    assert "hook stopped: 3 events delivered, 0 failed, 0 dropped" in hooks_log.text


def test_the_hook_attached_to_a_service_forwards_every_event(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    hook = EventHook(append_to(out))
    hook.start()

    async def main() -> str:
        async with DurableService(store, [tour], clock=clock) as service:
            hook.attach(service)
            return await drive_tour(service, store, clock, value=2)

    eid = run(main())
    hook.stop()
    lines = read_lines(out)
    for line in lines:
        if line["type"] == "durable":
            assert set(line) == {"type", "kind", "execution_id", "data"}
        else:
            assert line == {"type": "event", "event": "order.shipped", "payload": {"order": 2}}
    assert sum(line["type"] == "event" for line in lines) == 1
    durable = [(line["kind"], line["data"]) for line in lines
               if line["type"] == "durable" and line["execution_id"] == eid]
    assert durable == [(a.kind, a.data) for a in store.list_audit_entries(eid)]
    assert {kind for kind, _ in durable} == set(KINDS)


def test_a_failing_command_is_logged_on_one_line_and_the_next_events_still_run(
        tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "events.jsonl"
    # fails for notes, succeeds otherwise
    command = (f'if [ "$DURABLECTL_EVENT" = note ]; then echo "no notes here" >&2; exit 3; fi;'
               f' {append_to(out)}')
    hook = EventHook(command)
    hook.start()
    hook.submit(durable_message(DurableEventRecord("note", "e1", {})))
    hook.submit(event_message(Shipped, 1))
    hook.stop()
    assert read_lines(out) == [event_message(Shipped, 1)]
    assert (hook.delivered, hook.failed) == (1, 1)
    [failure] = [r for r in hooks_log.records if "exited 3" in r.getMessage()]
    assert failure.levelno == logging.WARNING
    assert failure.getMessage().endswith("for note of execution e1: no notes here")
    assert "\n" not in failure.getMessage()


def test_a_command_that_cannot_run_is_logged(
        tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    hook = EventHook("true", cwd=tmp_path / "missing-folder")
    hook.start()
    hook.submit(event_message(Shipped, 1))
    hook.stop()
    assert hook.failed == 1
    assert "could not start for event order.shipped" in hooks_log.text


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not): the daemon's own check."""
    from durablectl.daemon.process import process_alive

    return process_alive(pid)


def test_a_slow_command_is_killed_at_its_timeout_and_never_blocks_submit(
        tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    pid_file = tmp_path / "child.pid"
    out = tmp_path / "events.jsonl"
    # the first event's command starts a grandchild that would outlive a plain kill
    command = (f'if [ "$DURABLECTL_EVENT" = slow ]; then sleep 30 & echo $! > '
               f'{shlex.quote(str(pid_file))}; wait; fi; {append_to(out)}')
    hook = EventHook(command, timeout=0.5)
    hook.start()
    started = time.monotonic()
    hook.submit(event_message("slow", 1))
    for n in range(50):
        hook.submit(event_message("fast", n))
    assert time.monotonic() - started < 0.5  # submitting never waits for the command
    child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))
    wait_for(lambda: hook.failed == 1)
    wait_for(lambda: not _alive(child))  # the whole process group was killed
    hook.stop()
    assert [line["payload"] for line in read_lines(out)] == list(range(50))
    assert (hook.delivered, hook.failed, hook.dropped) == (50, 1, 0)
    assert "timed out after 0.5s for event slow; killed" in hooks_log.text


def test_a_full_queue_drops_the_oldest_and_says_so(
        tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "events.jsonl"
    hook = EventHook(append_to(out), queue_size=2)  # not started yet: nothing is consumed
    for n in range(5):
        hook.submit(event_message(Shipped, n))
    assert hook.dropped == 3 and hook.pending() == 2
    warnings = [r for r in hooks_log.records if "hook queue full" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # not one per drop
    hook.start()
    hook.stop()
    assert [line["payload"] for line in read_lines(out)] == [3, 4]
    assert "3 dropped" in hooks_log.text


def test_stop_drains_with_a_deadline_then_drops_and_kills(
        tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    hook = EventHook("sleep 30")
    hook.start()
    for n in range(3):
        hook.submit(event_message(Shipped, n))
    wait_for(lambda: hook.pending() == 2)  # the first command runs
    started = time.monotonic()
    hook.stop(drain_seconds=0.3)
    assert time.monotonic() - started < 3.0
    assert (hook.delivered, hook.failed, hook.dropped) == (0, 1, 2)
    assert "2 queued event(s) dropped at stop" in hooks_log.text
    hook.submit(event_message(Shipped, 9))  # after stop: counted, never raised
    assert hook.dropped == 3


def test_a_slow_hook_never_slows_the_workflow(
        store: SqliteStore, tmp_path: Path, hooks_log: pytest.LogCaptureFixture) -> None:
    hook = EventHook("sleep 30", queue_size=3)
    hook.start()

    async def main() -> float:
        async with DurableService(store, [quick]) as service:
            hook.attach(service)
            started = time.monotonic()
            assert await service.execute(quick, 7, wait_timeout=5) == 7
            return time.monotonic() - started

    assert run(main()) < 2.0
    hook.stop(drain_seconds=0.1)
    assert hook.failed == 1 and hook.dropped > 0
    assert "hook queue full" in hooks_log.text


# -- end to end: a real daemon with [hooks] on_event -------------------------------------------
HOOKED = '''
from durablectl import Event, Signal, workflow

Go = Signal("go")
Done = Event("hooks.done")


@workflow("hooks.tour.v1")
async def tour(ctx, data: dict) -> dict:
    n = await ctx.step("double", lambda: data["n"] * 2)
    got = await ctx.wait_for_signal(Go, step_id="go")
    await ctx.emit(Done, {"n": n, "got": got}, step_id="done")
    return {"n": n, "got": got}
'''


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import shutil
    import tempfile

    from .test_daemon import DURABLECTL, DaemonHarness

    if not DURABLECTL.exists():
        pytest.skip("needs `make install`")
    runtime = Path(tempfile.mkdtemp(prefix="dctl-"))
    harness = DaemonHarness(tmp_path, runtime)
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, harness.env[name])
    monkeypatch.delenv("DURABLECTL_DB", raising=False)
    monkeypatch.delenv("DURABLECTL_CONFIG", raising=False)
    try:
        yield harness
    finally:
        harness.cleanup()  # always `daemon stop`, then SIGKILL what lingers
        shutil.rmtree(runtime, ignore_errors=True)


def test_the_daemon_forwards_the_events_of_an_execution_to_its_hook(daemon: Any) -> None:
    out = daemon.tmp / "events.jsonl"
    # relative to the config file's folder, where the command runs
    daemon.write_config(extra='[hooks]\non_event = "cat >> events.jsonl"\n')
    daemon.write_module("hooked", HOOKED)
    daemon.start()
    eid = daemon.start_execution("hooks.tour.v1", {"n": 4})
    daemon.wait_status(eid, "waiting")
    daemon.signal(eid, "go", "yes")
    daemon.wait_status(eid, "completed")

    def finished() -> list[dict[str, Any]] | None:
        lines = read_lines(out)
        done = any(line.get("kind") == "execution_status_changed"
                   and line.get("execution_id") == eid and line["data"]["to"] == "completed"
                   for line in lines)
        return lines if done else None

    lines = wait_for(finished)
    mine = [line for line in lines if line.get("execution_id") == eid]
    assert all(set(line) == {"type", "kind", "execution_id", "data"} and
               line["type"] == "durable" for line in mine)
    kinds = [line["kind"] for line in mine]
    for kind in ("execution_status_changed", "step_completed", "signal_waiting",
                 "signal_delivered", "emit_published"):
        assert kind in kinds, kind
    assert kinds.index("step_completed") < kinds.index("signal_delivered") < \
        kinds.index("emit_published")
    assert [line["data"]["to"] for line in mine
            if line["kind"] == "execution_status_changed"][-1] == "completed"
    assert [line for line in lines if line["type"] == "event"] == [
        {"type": "event", "event": "hooks.done", "payload": {"n": 8, "got": "yes"}}]
    stopped = daemon.stop()
    assert stopped.returncode == 0, stopped.stderr

