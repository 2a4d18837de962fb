"""The admin package's root gates (``handlers.routing``) let in every message and callback
one of its handlers may take, and keep out the rest (which then skip eight routers)."""

from __future__ import annotations

import time
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, Message, Update

import handlers.admin as admin
from handlers import callbacks
from handlers.admin.errors import ErrorLookup
from handlers.admin.inventory import InventoryAccept
from handlers.admin.stuck_pending import StuckRecovery
from handlers.routing import CallbackGate, MessageGate, callback_gate, message_gate


def _message(text: str) -> Message:
    return Message.model_validate(
        {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": 1, "type": "private"},
            "from": {"id": 1, "is_bot": False, "first_name": "A"},
            "text": text,
        }
    )


def _query(data: str) -> CallbackQuery:
    return CallbackQuery.model_validate(
        {"id": "q", "chat_instance": "c", "data": data,
         "from": {"id": 1, "is_bot": False, "first_name": "A"}}
    )  # fmt: skip


def _gates() -> tuple[MessageGate, CallbackGate]:
    (message,) = admin.router.message._handler.filters or []
    (query,) = admin.router.callback_query._handler.filters or []
    assert isinstance(message.callback, MessageGate)
    assert isinstance(query.callback, CallbackGate)
    return message.callback, query.callback


async def test_messages_for_the_admin_package_pass_its_gate() -> None:
    gate, _ = _gates()
    assert await gate(_message("/workflow_recovery"))
    assert await gate(_message("/workflow_recovery@some_bot extra"))
    for state in (ErrorLookup.reference, InventoryAccept.reason, StuckRecovery.reason):
        assert await gate(_message("a reason"), raw_state=state.state)


async def test_other_messages_are_kept_out() -> None:
    gate, _ = _gates()
    for text in ("/start", "/new", "hello", "/", "/workflow_recoveryx"):
        assert not await gate(_message(text)), text
    assert not await gate(_message("Router dead"), raw_state="NewRequest:description")


async def test_every_admin_callback_passes_and_no_other() -> None:
    _, gate = _gates()
    admin_classes = {
        f.callback.callback_data
        for r in admin.router.chain_tail
        for h in r.callback_query.handlers
        for f in h.filters or ()
        if hasattr(f.callback, "callback_data")
    }
    assert len(admin_classes) > 10
    for cls in admin_classes:
        fields = {
            name: (0 if field.annotation is int else "x")
            for name, field in cls.model_fields.items()
            if field.is_required()
        }
        try:
            data = cls(**fields).pack()
        except Exception:  # a field of another type: the prefix alone decides
            data = cls.__prefix__ + cls.__separator__ + "0"
        assert await gate(_query(data)), data
    others = [callbacks.LanguageCb(code="en").pack(), "adv:1:2", "new:repair", "garbage"]
    for data in others:
        assert not await gate(_query(data)), data


def test_a_tree_with_an_ungated_handler_gets_no_gate() -> None:
    class Cb(CallbackData, prefix="t"):
        n: int

    router, child = Router(), Router()
    router.include_router(child)
    child.message.register(lambda m: None, Command("a"))
    child.message.register(lambda m: None, StateFilter("S:s"))
    child.callback_query.register(lambda q: None, Cb.filter())
    assert message_gate(router) is not None and callback_gate(router) is not None
    child.message.register(lambda m: None, F.text == "x")
    child.callback_query.register(lambda q: None, F.data == "x")
    assert message_gate(router) is None
    assert callback_gate(router) is None


async def test_the_gated_root_skips_what_a_gate_refuses_and_enters_the_rest() -> None:
    """``GatedRouter`` asks a sub-router's gate before entering it; a sub-router whose
    observer has an outer middleware is entered as aiogram does (the middleware runs before
    the gate), one without a gate too; the handler that answers is the one aiogram picks."""
    from aiogram import BaseMiddleware, Bot, Dispatcher

    from handlers.routing import GatedRouter, gate_tree

    seen: list[str] = []

    class Outer(BaseMiddleware):
        async def __call__(self, handler: Any, event: Any, data: dict[str, Any]) -> Any:
            seen.append("outer")
            return await handler(event, data)

    def leaf(name: str, command: str) -> Router:
        router = Router(name=name)

        @router.message(Command(command))
        async def answer(message: Message) -> str:
            seen.append(name)
            return name

        gate_tree(router)
        return router

    gated, watched, last = leaf("gated", "a"), leaf("watched", "b"), Router(name="last")
    watched.message.outer_middleware(Outer())

    @last.message()
    async def anything(message: Message) -> str:
        seen.append("last")
        return "last"

    root = GatedRouter(name="root")
    root.include_routers(gated, watched, last)
    dp = Dispatcher()
    dp.include_router(root)
    bot = Bot("42:TEST")
    for text, answered, trail in (
        ("/a", "gated", ["gated"]),
        ("/b", "watched", ["outer", "watched"]),
        ("/c", "last", ["outer", "last"]),  # the outer middleware runs, the gate says no
        ("hello", "last", ["outer", "last"]),
    ):
        seen.clear()
        result = await dp.feed_update(bot, Update(update_id=1, message=_message(text)))
        assert (result, seen) == (answered, trail), text
