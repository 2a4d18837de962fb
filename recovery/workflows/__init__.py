"""``WorkflowRecoveryManager``: find stuck workflows and repair them on an admin's order.

Stuck (design: Policies): an active request whose time in its state exceeds that state's
deadline (``thresholds`` per ``"workflow_type:state"``, default ``default_threshold_s`` =
24 h), or whose assignee is inactive or has blocked the bot, whatever the time.

The four recovery actions (``RecoveryAction``): force transition to the next step, reset to
the previous state of the history, force completion, reassign to an active user of the
owning role. Each is one transaction that locks the request row (``SELECT ... FOR
UPDATE``), checks the version the admin saw (optimistic locking), plans the change from the
locked row, writes ``workflow_transitions`` (kind force, reset, complete or reassign) and
``workflow_recovery_log`` (admin, reason, before, after), reverses with ``return`` ledger
rows the materials that a reset's undone step consumed (``database.compensation``), and
enqueues the notifications to the people now responsible and to the client (transactional
outbox). Each runs through ``TransactionalStateManager.run`` like the staff operations (a
``transaction_log`` row, whole-transaction retry of transient failures, in-doubt
resolution). A refused or failed action changes nothing and is logged with
``success = false`` outside the rolled-back transaction.

Refusals are the project's typed errors (``recovery.exceptions``); ``refusal_code`` turns
one into a short code the admin screens translate.
"""

from recovery.workflows.codes import failure_code, failure_text, refusal_code
from recovery.workflows.history import ResetTarget, fingerprint, reset_target
from recovery.workflows.manager import WorkflowRecoveryManager
from recovery.workflows.model import (
    ALREADY_ASSIGNED,
    DIGEST_MAX_IDS,
    NO_HISTORY,
    NOT_ACTIVE,
    TERMINAL,
    BatchResult,
    Outcome,
    Plan,
    PreviewOutdatedError,
    RecoveryAction,
    RequestDetail,
    StuckAlerts,
    StuckPage,
    StuckRequest,
)

__all__ = [
    "ALREADY_ASSIGNED",
    "DIGEST_MAX_IDS",
    "NOT_ACTIVE",
    "NO_HISTORY",
    "TERMINAL",
    "BatchResult",
    "Outcome",
    "Plan",
    "PreviewOutdatedError",
    "RecoveryAction",
    "RequestDetail",
    "ResetTarget",
    "StuckAlerts",
    "StuckPage",
    "StuckRequest",
    "WorkflowRecoveryManager",
    "failure_code",
    "failure_text",
    "fingerprint",
    "refusal_code",
    "reset_target",
]
