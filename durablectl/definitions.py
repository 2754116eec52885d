"""Workflow definitions: ``@workflow``, ``Signal``, ``Event`` and ``Branch`` (a module not named
``workflow``, so that ``durablectl.workflow`` stays the decorator).


Definitions are plain values; nothing here runs or stores anything. A ``Workflow`` is what a
service runs and what callers pass (or its id / alias) to start one.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from durablectl.errors import WorkflowNotFound

WorkflowFn = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Signal:
    """A signal definition; its payloads are JSON values."""

    id: str

    def __post_init__(self) -> None:
        _check_name("signal", self.id)


@dataclass(frozen=True)
class Event:
    """An event definition for ``ctx.emit``."""

    id: str

    def __post_init__(self) -> None:
        _check_name("event", self.id)


@dataclass(frozen=True)
class Branch:
    """One arm of ``ctx.switch``: ``match(value)`` picks it, ``run(value)`` runs once."""

    id: str
    match: Callable[[Any], bool] | None
    run: Callable[[Any], Any]


@dataclass(frozen=True)
class ScheduleSpec:
    """A recurring schedule declared with a workflow (``cron(...)`` or ``every(...)``)."""

    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str | None = None
    catch_up: str | None = None
    overlap: str | None = None


def cron(expression: str, *, timezone: str | None = None, catch_up: str | None = None,
         overlap: str | None = None) -> ScheduleSpec:
    return ScheduleSpec(cron=expression, timezone=timezone, catch_up=catch_up, overlap=overlap)


def every(interval: float | timedelta, *, catch_up: str | None = None,
          overlap: str | None = None) -> ScheduleSpec:
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
    return ScheduleSpec(interval_seconds=seconds, catch_up=catch_up, overlap=overlap)


@dataclass(frozen=True, eq=False)
class Workflow:
    """A durable workflow: ``fn(ctx, input)``, identified by ``id`` in stored history."""

    id: str
    fn: WorkflowFn
    alias: str | None = None
    max_attempts: int = 3
    retry_backoff: float = 2.0
    timeout: float | None = None
    schedule: ScheduleSpec | None = None

    async def __call__(self, ctx: Any, input: Any) -> Any:
        return await self.fn(ctx, input)


def workflow(
    id: str,
    *,
    alias: str | None = None,
    max_attempts: int = 3,
    retry_backoff: float = 2.0,
    timeout: float | timedelta | None = None,
    schedule: ScheduleSpec | None = None,
) -> Callable[[WorkflowFn], Workflow]:
    """Declare an ``async def fn(ctx, input)`` as a durable workflow with a stable ``id``."""
    _check_name("workflow", id)
    if alias is not None:
        _check_name("alias", alias)
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout

    def decorate(fn: WorkflowFn) -> Workflow:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"workflow {id!r} must be an async def function")
        return Workflow(id=id, fn=fn, alias=alias, max_attempts=max_attempts,
                        retry_backoff=retry_backoff, timeout=timeout_s, schedule=schedule)

    return decorate


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a {what} id must be a non-empty string")


class Registry:
    """The workflows one service runs, by id and by alias."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._by_id: dict[str, Workflow] = {}
        self._by_alias: dict[str, Workflow] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow) -> None:
        if not isinstance(wf, Workflow):
            raise TypeError(f"expected a Workflow (decorate it with @workflow), got {wf!r}")
        self._by_id[wf.id] = wf
        if wf.alias:
            self._by_alias[wf.alias] = wf

    def replace(self, workflows: Iterable[Workflow]) -> None:
        """Swap the whole set at once (a module reload); runs in progress keep the definition
        they started with."""
        fresh = Registry(workflows)
        self._by_id, self._by_alias = fresh._by_id, fresh._by_alias

    def get(self, workflow_id: str) -> Workflow | None:
        return self._by_id.get(workflow_id)

    def resolve(self, ref: Workflow | str) -> Workflow | None:
        """An id or alias -> the concrete workflow (the alias is resolved once, at start)."""
        if isinstance(ref, Workflow):
            return self._by_id.get(ref.id, ref)
        return self._by_id.get(ref) or self._by_alias.get(ref)

    def require(self, ref: Workflow | str) -> Workflow:
        found = self.resolve(ref)
        if found is None:
            raise WorkflowNotFound(str(ref), list(self._by_id))
        return found

    def ids(self) -> list[str]:
        return list(self._by_id)

    def all(self) -> list[Workflow]:
        return list(self._by_id.values())


def workflow_ref_id(ref: Workflow | str) -> str:
    return ref.id if isinstance(ref, Workflow) else ref
