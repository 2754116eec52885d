"""durablectl: durable workflows for Python on a local SQLite file.

Names are resolved lazily (PEP 562) so that ``import durablectl.cli`` for a read-only command
does not load asyncio and the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "workflow": "durablectl.definitions",
    "Workflow": "durablectl.definitions",
    "Signal": "durablectl.definitions",
    "Event": "durablectl.definitions",
    "Branch": "durablectl.definitions",
    "ScheduleSpec": "durablectl.definitions",
    "cron": "durablectl.definitions",
    "every": "durablectl.definitions",
    "next_runs": "durablectl.schedules",
    "ScheduleRun": "durablectl.model",
    "WorkflowContext": "durablectl.context",
    "DurableService": "durablectl.service",
    "DurableClient": "durablectl.client",
    "DurableOperator": "durablectl.client",
    "create_dashboard_app": "durablectl.dashboard.app",
    "SqliteStore": "durablectl.store.sqlite",
    "Store": "durablectl.store.base",
    "durable_events": "durablectl.events",
    "DurableEventRecord": "durablectl.events",
    "ExecutionStatus": "durablectl.model",
    "Execution": "durablectl.model",
    "StepRecord": "durablectl.model",
    "AuditEntry": "durablectl.model",
    "Schedule": "durablectl.model",
    "ErrorInfo": "durablectl.model",
    "ExecutionDetail": "durablectl.model",
    "SignalResult": "durablectl.model",
    "Completed": "durablectl.model",
    "DurableError": "durablectl.errors",
    "ExecutionFailed": "durablectl.errors",
    "ExecutionCancelled": "durablectl.errors",
    "StepFailed": "durablectl.errors",
    "ExecutionStateError": "durablectl.errors",
    "ExecutionNotActive": "durablectl.errors",
    "DaemonRunning": "durablectl.errors",
    "StepIdError": "durablectl.errors",
    "PayloadError": "durablectl.errors",
    "NonDeterminismError": "durablectl.errors",
    "ResultTypeError": "durablectl.errors",
    "ConfigError": "durablectl.errors",
    "InvalidSchedule": "durablectl.errors",
    "WorkflowNotFound": "durablectl.errors",
    "ExecutionNotFound": "durablectl.errors",
    "ScheduleNotFound": "durablectl.errors",
    "DaemonNotRunning": "durablectl.errors",
    "WaitTimedOut": "durablectl.errors",
    "IncompatibleDatabase": "durablectl.errors",
    "StorageError": "durablectl.errors",
    "LeaseLost": "durablectl.errors",
}

__version__ = "0.1.0"
__all__ = [
    "AuditEntry",
    "Branch",
    "Completed",
    "ConfigError",
    "DaemonNotRunning",
    "DaemonRunning",
    "DurableClient",
    "DurableError",
    "DurableEventRecord",
    "DurableOperator",
    "DurableService",
    "ErrorInfo",
    "Event",
    "Execution",
    "ExecutionCancelled",
    "ExecutionDetail",
    "ExecutionFailed",
    "ExecutionNotActive",
    "ExecutionNotFound",
    "ExecutionStateError",
    "ExecutionStatus",
    "IncompatibleDatabase",
    "InvalidSchedule",
    "LeaseLost",
    "NonDeterminismError",
    "PayloadError",
    "ResultTypeError",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleRun",
    "ScheduleSpec",
    "Signal",
    "SignalResult",
    "SqliteStore",
    "StepFailed",
    "StepIdError",
    "StepRecord",
    "StorageError",
    "Store",
    "WaitTimedOut",
    "Workflow",
    "WorkflowContext",
    "WorkflowNotFound",
    "create_dashboard_app",
    "cron",
    "durable_events",
    "every",
    "next_runs",
    "workflow",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'durablectl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from durablectl.client import DurableClient, DurableOperator
    from durablectl.context import WorkflowContext
    from durablectl.dashboard.app import create_dashboard_app
    from durablectl.definitions import (
        Branch,
        Event,
        ScheduleSpec,
        Signal,
        Workflow,
        cron,
        every,
        workflow,
    )
    from durablectl.errors import (
        ConfigError,
        DaemonNotRunning,
        DaemonRunning,
        DurableError,
        ExecutionCancelled,
        ExecutionFailed,
        ExecutionNotActive,
        ExecutionNotFound,
        ExecutionStateError,
        IncompatibleDatabase,
        InvalidSchedule,
        LeaseLost,
        NonDeterminismError,
        PayloadError,
        ResultTypeError,
        ScheduleNotFound,
        StepFailed,
        StepIdError,
        StorageError,
        WaitTimedOut,
        WorkflowNotFound,
    )
    from durablectl.events import DurableEventRecord, durable_events
    from durablectl.model import (
        AuditEntry,
        Completed,
        ErrorInfo,
        Execution,
        ExecutionDetail,
        ExecutionStatus,
        Schedule,
        ScheduleRun,
        SignalResult,
        StepRecord,
    )
    from durablectl.schedules import next_runs
    from durablectl.service import DurableService
    from durablectl.store.base import Store
    from durablectl.store.sqlite import SqliteStore
