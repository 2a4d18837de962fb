"""The audit of refused and failed recovery actions (``success = false`` rows)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from database import recovery_log
from recovery.actors import Actor
from recovery.workflows.base import ManagerBase
from recovery.workflows.model import (
    RecoveryAction,
)

log = logging.getLogger(__name__)


class RefusalLog(ManagerBase):
    """The audit of refused and failed recovery actions (``success = false`` rows)."""

    async def _log_outcome(
        self,
        request_id: int | None,
        action: RecoveryAction,
        admin: Actor,
        reason: str | None,
        before: dict[str, Any] | None,
        error_message: str,
        batch_id: uuid.UUID | None,
    ) -> None:
        """A ``success = false`` row, outside the rolled-back transaction; never raises (the
        database may be what failed: the outcome is still the caller's to report)."""
        try:
            await recovery_log.insert(
                self.pool,
                request_id=request_id,
                action=action.value,
                admin_id=admin.user_id,
                admin_telegram_id=admin.telegram_id,
                reason=reason,
                before=before,
                after=None,
                success=False,
                error_message=error_message,
                batch_id=batch_id,
            )
        except Exception as exc:
            log.warning(
                "could not log %s of %s on request %s: %s",
                error_message.split(":", 1)[0],
                action.value,
                request_id,
                type(exc).__name__,
            )
