"""A worker process for ``tests/test_crash.py``, which kills it with SIGKILL (or SIGSTOPs it).

Usage::

    python tests/crash_worker.py DB_PATH crash|run --tag TAG [--lease S] [--until EID ...]
    python tests/crash_worker.py DB_PATH signal EXECUTION_ID PAYLOAD_JSON ...

``crash`` and ``run`` open ``SqliteStore(DB_PATH)`` and run ``DurableService`` with the workflows
below until killed, or, with ``--until``, until those executions have finished (exit 0 when all
completed). ``signal`` sends the ``go`` signal once per payload, in order, through a
``DurableClient`` (another process than the worker) and exits.

Kill points are deterministic. Every input names a point (``"block"``: a point, or a dict from
worker tag to point); a ``crash`` worker that reaches it writes a line to a file and stops the
whole process at once (``SIGSTOP`` to itself: every thread freezes, so what the database holds
then is exactly what was committed before the point). The test waits for the line and the stop,
checks the database, and sends SIGKILL. A worker that is continued instead stays at the point
until ``DB_PATH.release`` or ``DB_PATH.release.TAG`` exists. A ``run`` worker ignores the points.
The points:

- a step id (``"b"``, ``"got-1"``): inside that step's body, after its side-effect line;
- ``"after:<step id>"``: in the workflow code right after that step's result came back, which is
  after its commit (line in ``DB_PATH.markers``);
- ``"parked"``: right after a run parked the execution (committed; line in ``DB_PATH.markers``).

Files beside the database, one line per event, appended with ``O_APPEND`` (they survive SIGKILL):

- ``DB_PATH.effects``: ``LABEL STEP TAG TIME`` for every real execution of a step body;
- ``DB_PATH.markers``: ``LABEL POINT TAG`` for the kill points outside step bodies;
- ``DB_PATH.outcomes``: ``TAG EXECUTION_ID STATUS DETAIL`` for every run that ended here;
- ``DB_PATH.starts``: ``TAG entering|ready TIME WORKER_ID`` (``entering`` is written just before
  the service starts, i.e. before it registers and recovers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from durablectl import (
    DurableClient,
    DurableError,
    DurableService,
    Signal,
    SqliteStore,
    workflow,
)

Go = Signal("go")

DB = ""
TAG = ""
CRASH = False


def _append(suffix: str, line: str) -> None:
    fd = os.open(DB + suffix, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _released() -> bool:
    return Path(DB + ".release").exists() or Path(f"{DB}.release.{TAG}").exists()


def _stops_at(block: Any, point: str) -> bool:
    if isinstance(block, dict):
        block = block.get(TAG)
    return CRASH and block == point


def _stop_here() -> None:
    """Freeze the whole process now; once continued, stay here until released."""
    os.kill(os.getpid(), signal.SIGSTOP)
    while not _released():
        time.sleep(0.01)


def effect(label: str, step: str, block: Any) -> str:
    """A step body: record that it really ran, stop here if this is the kill point."""
    _append(".effects", f"{label} {step} {TAG} {time.time():.6f}")
    if _stops_at(block, step):
        _stop_here()
    return f"{step} by {TAG}"


async def hook(label: str, point: str, block: Any) -> None:
    """A kill point in workflow code, outside any step (this blocks the event loop: the
    process stops anyway)."""
    if _stops_at(block, point):
        _append(".markers", f"{label} {point} {TAG}")
        _stop_here()


@workflow("crash.steps", max_attempts=1)
async def three_steps(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    label, block = data["label"], data.get("block")
    results = {}
    for name in ("a", "b", "c"):
        results[name] = await ctx.step(name, partial(effect, label, name, block))
        await hook(label, f"after:{name}", block)
    return results


@workflow("crash.sleeper", max_attempts=1)
async def sleeper(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    label, block = data["label"], data.get("block")
    a = await ctx.step("a", partial(effect, label, "a", block))
    await ctx.sleep(data["seconds"], step_id="nap")
    b = await ctx.step("b", partial(effect, label, "b", block))
    return {"a": a, "b": b}


@workflow("crash.signals", max_attempts=1)
async def collect(ctx: Any, data: dict[str, Any]) -> list[Any]:
    label, block = data["label"], data.get("block")
    payloads = []
    for i in range(data["count"]):
        payloads.append(await ctx.wait_for_signal(Go, step_id=f"sig-{i}"))
        await ctx.step(f"got-{i}", partial(effect, label, f"got-{i}", block))
    return payloads


WORKFLOWS = [three_steps, sleeper, collect]


def _outcome_listener(store: SqliteStore) -> Any:
    def listener(outcome: Any) -> None:
        detail = (outcome.detail or "").replace("\n", " ")
        _append(".outcomes", f"{TAG} {outcome.execution_id} {outcome.status} {detail}")
        if outcome.status not in ("sleeping", "waiting"):
            return
        execution = store.get_execution(outcome.execution_id)
        data = execution.input if execution is not None else None
        if isinstance(data, dict) and _stops_at(data.get("block"), "parked"):
            _append(".markers", f"{data['label']} parked {TAG}")
            _stop_here()

    return listener


async def serve(args: argparse.Namespace) -> int:
    store = SqliteStore(DB)
    try:
        service = DurableService(store, WORKFLOWS, worker_id=f"{TAG}-{os.getpid()}",
                                 lease_seconds=args.lease, grace_seconds=1)
        service.runner.outcome_listeners.append(_outcome_listener(store))
        _append(".starts", f"{TAG} entering {time.time():.6f} {service.worker_id}")
        async with service:
            _append(".starts", f"{TAG} ready {time.time():.6f} {service.worker_id}")
            if not args.until:
                await asyncio.Event().wait()  # until killed
            failed = 0
            for execution_id in args.until:
                try:
                    result = await service.wait(execution_id)
                except DurableError as exc:
                    print(f"{execution_id}: {exc}", file=sys.stderr)
                    failed += 1
                else:
                    print(json.dumps({execution_id: result}))
            return 1 if failed else 0
    finally:
        store.close()


def send_signals(execution_id: str, payloads: list[str]) -> int:
    store = SqliteStore(DB)
    try:
        client = DurableClient(store)
        for text in payloads:
            client.signal(execution_id, Go, json.loads(text))
    finally:
        store.close()
    return 0


def main(argv: list[str]) -> int:
    global DB, TAG, CRASH
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("db")
    parser.add_argument("mode", choices=["crash", "run", "signal"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--tag", default="w")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--until", action="append", default=[])
    args = parser.parse_args(argv)
    DB, TAG, CRASH = args.db, args.tag, args.mode == "crash"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {TAG} %(name)s %(levelname)s %(message)s")
    if args.mode == "signal":
        return send_signals(args.rest[0], args.rest[1:])
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
