"""A confirmation or review waiting in the admin's FSM data: one place for its key, its
lifetime and the token that names it.

A value is stored under ``key`` with the time it was put (``at``, seconds since the epoch)
and a random ``token`` (8 hex digits, short enough for callback data's 64 bytes); it is
taken at most once, and not after ``ttl_s`` seconds.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiogram.fsm.context import FSMContext


@dataclass(frozen=True)
class Pending:
    """A kind of waiting value: ``key`` in the FSM data, ``ttl_s`` its lifetime (seconds)."""

    key: str
    ttl_s: float

    async def put(self, state: FSMContext, value: dict[str, Any]) -> str:
        """Store ``value`` (JSON-able: the FSM storage may be Redis), replacing the previous
        one; returns its token."""
        token = secrets.token_hex(4)
        await state.update_data({self.key: {**value, "token": token, "at": time.time()}})
        return token

    async def peek(self, state: FSMContext, token: str | None = None) -> dict[str, Any] | None:
        """The value, left in place; None when there is none or its token is not ``token``
        (when given)."""
        value: dict[str, Any] | None = (await state.get_data()).get(self.key)
        if not value or (token is not None and value.get("token") != token):
            return None
        return value

    async def take(self, state: FSMContext, token: str | None = None) -> dict[str, Any] | None:
        """The value, removed (a second press finds nothing); None when there is none, its
        token is not ``token`` (then it stays), or it is older than ``ttl_s``."""
        value = await self.peek(state, token)
        if value is None:
            return None
        await self.drop(state)
        return value if time.time() - value["at"] <= self.ttl_s else None

    async def drop(self, state: FSMContext) -> None:
        """Forget the value."""
        await state.update_data({self.key: None})
