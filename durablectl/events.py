"""The kinds of durable events a service publishes to ``on(...)`` subscribers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DurableEventRecord:
    """What a subscriber to a durable event receives."""

    kind: str
    execution_id: str | None
    data: dict[str, Any] = field(default_factory=dict)


class durable_events:
    audit_appended = "audit_appended"
    execution_status_changed = "execution_status_changed"
    step_completed = "step_completed"
    sleep_scheduled = "sleep_scheduled"
    sleep_completed = "sleep_completed"
    signal_waiting = "signal_waiting"
    signal_delivered = "signal_delivered"
    signal_timed_out = "signal_timed_out"
    emit_published = "emit_published"
    switch_evaluated = "switch_evaluated"
    note = "note"
    operator_action = "operator_action"

    ALL: frozenset[str] = frozenset({
        "audit_appended", "execution_status_changed", "step_completed", "sleep_scheduled",
        "sleep_completed", "signal_waiting", "signal_delivered", "signal_timed_out",
        "emit_published", "switch_evaluated", "note", "operator_action",
    })
