"""Every error the library raises, each carrying the CLI exit code of SPEC §3.

One base class keeps handling uniform: the CLI prints ``error: <message>`` and exits with
``exit_code``; library users catch ``DurableError`` or a precise subclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durablectl.model import ErrorInfo


class DurableError(Exception):
    """Base of every durablectl error; ``exit_code`` is what the CLI exits with."""

    exit_code = 6

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExecutionFailed(DurableError):
    """Waited on an execution that failed or whose compensation failed."""

    exit_code = 1

    def __init__(self, execution_id: str, error: ErrorInfo | None, status: str = "failed") -> None:
        detail = f"{error.type}: {error.message}" if error else "no error recorded"
        super().__init__(f"execution {execution_id} {status}: {detail}")
        self.execution_id = execution_id
        self.error = error
        self.status = status


class ExecutionCancelled(DurableError):
    """Waited on an execution that was cancelled."""

    exit_code = 1

    def __init__(self, execution_id: str, reason: str | None = None) -> None:
        suffix = f": {reason}" if reason else ""
        super().__init__(f"execution {execution_id} was cancelled{suffix}")
        self.execution_id = execution_id
        self.reason = reason


class StepFailed(DurableError):
    """Raised into the workflow by a step that still failed after its retries."""

    exit_code = 1

    def __init__(self, step_id: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step_id!r} failed: {error_type}: {message}")
        self.step_id = step_id
        self.error_type = error_type
        self.message = message


class ExecutionStateError(DurableError):
    """An action on an execution whose status does not allow it."""

    exit_code = 2

    def __init__(
        self, execution_id: str, action: str, status: str, accepted: tuple[str, ...] | list[str]
    ) -> None:
        accepted_text = ", ".join(accepted)
        super().__init__(
            f"cannot {action} execution {execution_id}: it is {status} "
            f"(accepted: {accepted_text})"
        )
        self.execution_id = execution_id
        self.action = action
        self.status = status
        self.accepted = tuple(accepted)


class ExecutionNotActive(ExecutionStateError):
    """Signal or cancel of an execution that has already finished."""


class DaemonRunning(DurableError):
    exit_code = 2

    def __init__(self, pid: int, database: str) -> None:
        super().__init__(f"a daemon (pid {pid}) already serves {database}")
        self.pid = pid


class StepIdError(DurableError):
    """Duplicate, reserved or (under policy ``error``) implicit step id."""

    exit_code = 2


class PayloadError(DurableError):
    """A value that is not JSON, or is larger than the configured limit."""

    exit_code = 2

    def __init__(self, message: str, step_id: str | None = None) -> None:
        super().__init__(message)
        self.step_id = step_id


class NonDeterminismError(DurableError):
    """Replayed code asked for a stored step id as a different kind."""

    exit_code = 2

    def __init__(self, step_id: str, stored_kind: str, requested_kind: str) -> None:
        super().__init__(
            f"non-deterministic replay at step {step_id!r}: history has a {stored_kind!r} step, "
            f"the workflow now asks for a {requested_kind!r}"
        )
        self.step_id = step_id
        self.stored_kind = stored_kind
        self.requested_kind = requested_kind


class ResultTypeError(DurableError):
    exit_code = 2


class ConfigError(DurableError):
    exit_code = 2


class UnsafePermissions(DurableError):
    """The daemon refuses a database, or a folder it runs code from, that other users can
    write."""

    exit_code = 2


class InvalidSchedule(DurableError):
    exit_code = 2


class WorkflowNotFound(DurableError):
    exit_code = 3

    def __init__(self, workflow_id: str, known: list[str] | None = None) -> None:
        known_text = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown workflow {workflow_id!r}{known_text}")
        self.workflow_id = workflow_id
        self.known = sorted(known or [])


class ExecutionNotFound(DurableError):
    exit_code = 3

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"unknown execution {execution_id!r}")
        self.execution_id = execution_id


class ScheduleNotFound(DurableError):
    exit_code = 3

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"unknown schedule {schedule_id!r}")
        self.schedule_id = schedule_id


class DaemonNotRunning(DurableError):
    exit_code = 4


class WaitTimedOut(DurableError, TimeoutError):
    """A wait ran out of time; the execution itself goes on."""

    exit_code = 5

    def __init__(self, execution_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"execution {execution_id} still {status} after waiting {timeout:g}s"
        )
        self.execution_id = execution_id
        self.status = status


class IncompatibleDatabase(DurableError):
    """The file is not a durablectl database, or was written by a newer version."""

    exit_code = 6


class StorageError(DurableError):
    """Locked, full, read-only or corrupt storage."""

    exit_code = 6


class LeaseLost(DurableError):
    """Internal: this worker no longer owns the execution it tried to write."""

    exit_code = 6

    def __init__(self, execution_id: str, worker_id: str) -> None:
        super().__init__(f"worker {worker_id} no longer holds the lease of {execution_id}")
        self.execution_id = execution_id
        self.worker_id = worker_id


def describe(exc: BaseException) -> dict[str, Any]:
    """A JSON-friendly summary of an exception (used for error records)."""
    return {"type": type(exc).__name__, "message": str(exc)}
