"""Every callback query answered exactly once, by aiogram's ``CallbackAnswerMiddleware``.

A handler never calls ``query.answer``: it sets what the answer says on the
``callback_answer`` it is given (``callback_answer.text``, ``callback_answer.show_alert``),
and the middleware answers when the handler returns. A handler that runs long (a batch, an
inventory check) answers first with ``handlers.screens.answer_now`` (which disables this
answer): Telegram refuses an answer given too late ("query is too old").

One departure from aiogram's class: when the handler raises, nothing is answered here. The
error middleware (``middlewares.enhanced_error_handler``, outside every handler) answers
instead, with an alert that carries the error reference; answering here first would push
that alert into a chat message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram.dispatcher.flags import get_flag
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, TelegramObject
from aiogram.utils.callback_answer import CallbackAnswer, CallbackAnswerMiddleware


class AnswerEveryCallback(CallbackAnswerMiddleware):
    """``CallbackAnswerMiddleware`` (register it on ``dp.callback_query.middleware``: it
    then wraps every callback handler of every router) that leaves a raising handler's
    callback to the error middleware. Texts given as lazy translations (``lazy_gettext``
    in a flag) are rendered in the user's language when the answer is sent."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, CallbackQuery):
            return await handler(event, data)
        answer = self.construct_callback_answer(properties=get_flag(data, "callback_answer"))
        data["callback_answer"] = answer
        if not answer.disabled and answer.answered:  # "pre": answer before the handler runs
            await self.answer(event, answer)
        result = await handler(event, data)
        if not answer.disabled and not answer.answered:
            await self.answer(event, answer)
        return result

    def answer(self, event: CallbackQuery, callback_answer: CallbackAnswer) -> AnswerCallbackQuery:
        """The ``answerCallbackQuery`` call; a lazy text becomes ``str`` here."""
        text = callback_answer.text
        return event.answer(
            text=str(text) if text is not None else None,
            show_alert=callback_answer.show_alert,
            url=callback_answer.url,
            cache_time=callback_answer.cache_time,
        )
