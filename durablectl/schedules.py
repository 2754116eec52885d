"""Schedule management shared by ``DurableService`` and ``DurableClient`` (synchronous: the
store's methods are), and the plan a worker follows when a schedule is due.

Validation happens before anything is written: a bad cron expression, an unknown time zone or
policy raises ``InvalidSchedule`` and stores nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from durablectl import codec
from durablectl.clock import Clock, seconds_of, to_datetime
from durablectl.definitions import Registry, Workflow
from durablectl.errors import InvalidSchedule, ScheduleNotFound
from durablectl.model import Schedule
from durablectl.scheduling import (
    due_ticks,
    make_recurrence,
    validate_cron,
    validate_interval,
    validate_policy,
    validate_timezone,
)
from durablectl.scheduling import next_runs as _next_runs
from durablectl.store.base import ScheduleDefinition, SchedulePlan, Store

UNSET: Any = object()  # "not given" for update_schedule, where None is a value
UNDECLARED = "undeclared"


def next_runs(cron: str | None = None, interval: float | timedelta | None = None, *,
              timezone: str | None = None, after: datetime | None = None, count: int = 5,
              clock: Clock | None = None) -> list[datetime]:
    """The next ``count`` ticks of a cron expression or an interval (aware UTC datetimes)."""
    from durablectl.clock import SystemClock

    now = (clock or SystemClock()).now()
    return _next_runs(cron, interval, timezone=timezone, after=after, count=count, now=now)


class ScheduleManager:
    """The schedule calls of SPEC §3 on a store."""

    def __init__(self, store: Store, clock: Clock, *, registry: Registry | None = None,
                 catch_up: str = "one", overlap: str = "allow",
                 max_payload_bytes: int = codec.DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        self.default_catch_up = catch_up
        self.default_overlap = overlap
        self.max_payload_bytes = max_payload_bytes

    # helpers -----------------------------------------------------------------------------
    def _workflow_id(self, workflow: Workflow | str) -> str:
        from durablectl.client import resolve_workflow

        workflow_id, _definition, _known = resolve_workflow(self.store, self.registry, workflow)
        return workflow_id

    def _input(self, value: Any, schedule_id: str) -> str:
        return codec.encode(value, what=f"the input of schedule {schedule_id!r}",
                            max_bytes=self.max_payload_bytes)

    def _first_tick(self, definition: ScheduleDefinition, after: float) -> float:
        recurrence = make_recurrence(definition.cron, definition.interval_seconds,
                                     timezone=definition.timezone,
                                     anchor=to_datetime(after))
        return recurrence.next_after(to_datetime(after)).timestamp()  # type: ignore[arg-type]

    def _definition(self, *, schedule_id: str, workflow_id: str, cron: str | None,
                    interval: float | timedelta | None, timezone: str | None,
                    input_json: str | None, catch_up: str | None, overlap: str | None,
                    declared: bool) -> ScheduleDefinition:
        if (cron is None) == (interval is None):
            raise InvalidSchedule(f"schedule {schedule_id!r} needs exactly one of cron= and "
                                  "interval=")
        catch_up, overlap = validate_policy(catch_up, overlap)
        return ScheduleDefinition(
            id=schedule_id, workflow_id=workflow_id,
            kind="cron" if cron is not None else "interval",
            cron=validate_cron(cron) if cron is not None else None,
            interval_seconds=validate_interval(interval) if interval is not None else None,
            timezone=validate_timezone(timezone), input_json=input_json,
            catch_up=catch_up or self.default_catch_up, overlap=overlap or self.default_overlap,
            declared=declared)

    # the API -----------------------------------------------------------------------------
    def schedule(self, workflow: Workflow | str, input: Any = None, *,
                 at: datetime | None = None, delay: float | timedelta | None = None,
                 id: str | None = None) -> str:
        """A one-time schedule: runs once at ``at`` (or after ``delay``), however late."""
        if (at is None) == (delay is None):
            raise InvalidSchedule("a one-time schedule needs exactly one of at= and delay=")
        if at is not None and at.tzinfo is None:
            raise InvalidSchedule("at= must be a timezone-aware datetime")
        schedule_id = id or f"once-{uuid.uuid4().hex[:12]}"
        now = self.clock.timestamp()
        due = at.timestamp() if at is not None else now + seconds_of(delay)  # type: ignore[arg-type]
        definition = ScheduleDefinition(
            id=schedule_id, workflow_id=self._workflow_id(workflow), kind="once", cron=None,
            interval_seconds=None, timezone=None, input_json=self._input(input, schedule_id),
            catch_up=self.default_catch_up, overlap=self.default_overlap)
        self.store.ensure_schedule(definition, next_run=due, now=now)
        return schedule_id

    def ensure_schedule(self, workflow: Workflow | str, input: Any = None, *, id: str,
                        cron: str | None = None, interval: float | timedelta | None = None,
                        timezone: str | None = None, catch_up: str | None = None,
                        overlap: str | None = None, declared: bool = False,
                        resume_undeclared: bool = False) -> Schedule:
        """Create or update a recurring schedule; the same arguments change nothing."""
        definition = self._definition(
            schedule_id=id, workflow_id=self._workflow_id(workflow), cron=cron,
            interval=interval, timezone=timezone, input_json=self._input(input, id),
            catch_up=catch_up, overlap=overlap, declared=declared)
        now = self.clock.timestamp()
        schedule, _changed = self.store.ensure_schedule(
            definition, next_run=self._first_tick(definition, now), now=now,
            resume_undeclared=resume_undeclared)
        return schedule

    def update_schedule(self, schedule_id: str, *, cron: Any = UNSET, interval: Any = UNSET,
                        input: Any = UNSET, timezone: Any = UNSET, catch_up: Any = UNSET,
                        overlap: Any = UNSET) -> Schedule:
        """Change only what is given; ``cron`` on an interval schedule (or the reverse)
        changes its kind. Re-arms the schedule."""
        current = self.get_schedule(schedule_id)
        if current is None:
            raise ScheduleNotFound(schedule_id)
        if current.kind == "once":
            raise InvalidSchedule(f"schedule {schedule_id!r} is a one-time schedule; remove it "
                                  "and add another")
        new_cron, new_interval = current.cron, current.interval_seconds
        if cron is not UNSET and cron is not None:
            new_cron, new_interval = cron, None
        if interval is not UNSET and interval is not None:
            new_cron, new_interval = None, interval
        definition = self._definition(
            schedule_id=schedule_id, workflow_id=current.workflow_id, cron=new_cron,
            interval=new_interval,
            timezone=current.timezone if timezone is UNSET else timezone,
            input_json=json.dumps(current.input) if input is UNSET else self._input(
                input, schedule_id),
            catch_up=current.catch_up if catch_up is UNSET else catch_up,
            overlap=current.overlap if overlap is UNSET else overlap,
            declared=current.declared)
        now = self.clock.timestamp()
        schedule, _changed = self.store.ensure_schedule(
            definition, next_run=self._first_tick(definition, now), now=now)
        return schedule

    def pause_schedule(self, schedule_id: str, *, reason: str = "operator") -> Schedule:
        return self.store.pause_schedule(schedule_id, reason=reason,
                                         now=self.clock.timestamp())

    def resume_schedule(self, schedule_id: str, *, only_reason: str | None = None) -> Schedule:
        """Re-arm at the next future tick (missed ticks while paused are not run)."""
        current = self.get_schedule(schedule_id)
        if current is None:
            raise ScheduleNotFound(schedule_id)
        now = self.clock.timestamp()
        if current.kind == "once":
            next_run = current.next_run.timestamp() if current.next_run else now
        else:
            definition = self._definition(
                schedule_id=schedule_id, workflow_id=current.workflow_id, cron=current.cron,
                interval=current.interval_seconds, timezone=current.timezone, input_json=None,
                catch_up=current.catch_up, overlap=current.overlap, declared=current.declared)
            next_run = self._first_tick(definition, now)
        return self.store.resume_schedule(schedule_id, next_run=next_run, now=now,
                                          only_reason=only_reason)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.store.get_schedule(schedule_id)

    def list_schedules(self) -> list[Schedule]:
        return self.store.list_schedules()

    def remove_schedule(self, schedule_id: str) -> None:
        self.store.remove_schedule(schedule_id)


class SchedulePlanner:
    """What a worker does with a due schedule (the ``plan`` the store's firing calls)."""

    def __init__(self, *, now: float, misfire_grace_seconds: float, max_catch_up: int) -> None:
        self.now = now
        self.misfire_grace_seconds = misfire_grace_seconds
        self.max_catch_up = max_catch_up

    def __call__(self, schedule: Schedule, due_at: float) -> SchedulePlan:
        due = to_datetime(due_at)
        now = to_datetime(self.now)
        assert due is not None and now is not None
        recurrence = None
        if schedule.kind != "once":
            # the due tick is on the schedule's grid, so it anchors an interval as well
            recurrence = make_recurrence(schedule.cron, schedule.interval_seconds,
                                         timezone=schedule.timezone, anchor=due)
        decided = due_ticks(due, now, recurrence, catch_up=schedule.catch_up,
                            misfire_grace_seconds=self.misfire_grace_seconds,
                            max_catch_up=self.max_catch_up)
        missed = None
        if decided.missed is not None:
            missed = (decided.missed.count, decided.missed.last.timestamp())
        return SchedulePlan(run=tuple(t.timestamp() for t in decided.run), missed=missed,
                            next_due=None if decided.next_due is None
                            else decided.next_due.timestamp())
