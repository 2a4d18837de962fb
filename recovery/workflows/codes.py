"""Short codes for why a recovery action was refused or failed (shown translated to the
admin, written to ``workflow_recovery_log``)."""

from __future__ import annotations

from recovery.classification import ErrorCategory, classify
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    InvalidTransitionError,
    NotFoundError,
    TransactionInDoubtError,
)
from recovery.workflows.model import (
    ALREADY_ASSIGNED,
    NO_HISTORY,
    NOT_ACTIVE,
    TERMINAL,
    PreviewOutdatedError,
)


def refusal_code(exc: DomainError) -> str:
    """A short code for why an action was refused: ``stale``, ``materials_changed``,
    ``not_found``, ``not_active``, ``terminal``, ``no_history``, ``already_assigned``,
    ``assignee_unavailable`` or ``refused``."""
    if isinstance(exc, PreviewOutdatedError):
        return "materials_changed"
    if isinstance(exc, ConcurrentModificationError):
        return "stale"
    if isinstance(exc, NotFoundError):
        return "assignee_unavailable" if exc.entity == "user" else "not_found"
    if isinstance(exc, InputValidationError) and exc.field == "assignee_id":
        return "assignee_unavailable"
    if isinstance(exc, InvalidTransitionError):
        return {
            NOT_ACTIVE: "not_active",
            TERMINAL: "terminal",
            NO_HISTORY: "no_history",
            ALREADY_ASSIGNED: "already_assigned",
        }.get(exc.detail, "refused")
    return "refused"


def failure_code(exc: BaseException) -> str:
    """A short code for an action that failed without a refusal: ``in_doubt`` (its COMMIT
    outcome could not be settled: applied once or not at all), ``unavailable`` (a transient
    failure, e.g. the database connection lost on every attempt: nothing was changed) or
    ``error`` (anything else: nothing was changed)."""
    if isinstance(exc, TransactionInDoubtError):
        return "in_doubt"
    if classify(exc).category is ErrorCategory.TRANSIENT:
        return "unavailable"
    return "error"


def failure_text(exc: BaseException) -> str:
    """``"<failure_code>: <exception type> <SQLSTATE>"`` for the audit log (never the
    exception's text, which may hold user data)."""
    sqlstate = getattr(exc, "sqlstate", None)
    detail = f" {sqlstate}" if isinstance(sqlstate, str) else ""
    return f"{failure_code(exc)}: {type(exc).__name__}{detail}"
