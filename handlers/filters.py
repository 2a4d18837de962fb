"""Filters shared by the routers, awaitable so that aiogram calls them in the event loop.

aiogram runs a filter that is neither a coroutine function nor a ``Filter`` (a bare
``State``, a magic filter such as ``F.text``) through ``asyncio.to_thread``: a thread hop
for every update the filter is asked about.
"""

from __future__ import annotations

from aiogram.filters import Filter
from aiogram.types import Message


class TextAnswer(Filter):
    """A message with text that is not a command: the answer to a question the bot asked
    (a description, a reason, a reference)."""

    async def __call__(self, message: Message) -> bool:
        return bool(message.text and not message.text.startswith("/"))
