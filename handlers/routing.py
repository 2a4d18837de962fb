"""Gates that keep an update out of a router's tree when none of its handlers could take it.

aiogram offers every message to every router in turn, and each router costs a propagation
(a middleware chain and copies of the handler data) before its filters say no. A router
whose message handlers each require a command or an FSM state, and whose callback handlers
each require a ``CallbackData`` prefix, can say no once, at its root: ``gate_tree`` reads
those requirements from the tree's own filters and installs a root filter on the router's
message and callback query observers that lets in only what some handler may take (a
superset: the handlers' filters still decide).

``GatedRouter`` goes one step further for the routers it holds: it asks a sub-router's gate
itself, before entering it, so that a sub-router that says no costs one filter call instead
of a propagation (aiogram's ``propagate_event``: a middleware chain built around a closure
and three copies of the handler data, then the same filter).
"""

from __future__ import annotations

from collections.abc import Iterable
from inspect import isclass
from typing import Any

from aiogram import Router
from aiogram.dispatcher.event.bases import REJECTED, UNHANDLED
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.dispatcher.event.telegram import TelegramEventObserver
from aiogram.filters import Command, Filter, StateFilter
from aiogram.filters.callback_data import CallbackQueryFilter
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message, TelegramObject


class MessageGate(Filter):
    """Passes a message in one of ``states`` (raw FSM state names) or whose text (or
    caption) starts with one of ``prefixes`` followed by one of ``commands`` (compared
    case-folded, without an ``@mention``)."""

    def __init__(self, commands: Iterable[str], prefixes: str, states: Iterable[str]) -> None:
        self.commands = frozenset(c.casefold() for c in commands)
        self.prefixes = prefixes
        self.states = frozenset(states)

    async def __call__(self, message: Message, raw_state: str | None = None) -> bool:
        if raw_state is not None and raw_state in self.states:
            return True
        text = message.text or message.caption
        if not text or text[0] not in self.prefixes:
            return False
        word = text[1:].split(maxsplit=1)
        return bool(word) and word[0].split("@", 1)[0].casefold() in self.commands


class CallbackGate(Filter):
    """Passes a callback query whose data has one of the ``CallbackData`` prefixes in
    ``prefixes`` (separator -> prefixes) before the separator."""

    def __init__(self, prefixes: dict[str, frozenset[str]]) -> None:
        self.prefixes = tuple(prefixes.items())

    async def __call__(self, query: CallbackQuery) -> bool:
        data = query.data
        return bool(data and any(data.split(sep, 1)[0] in names for sep, names in self.prefixes))


def _handlers(router: Router, observer: str) -> list[HandlerObject]:
    return [h for r in router.chain_tail for h in r.observers[observer].handlers]


def _filters(handler: HandlerObject) -> list[Any]:
    return [f.callback for f in handler.filters or ()]


def _state_names(states: Iterable[Any]) -> set[str] | None:
    """Raw names of ``StateFilter`` states; None when one of them matches more (any state,
    no state)."""
    names: set[str] = set()
    for state in states:
        if isinstance(state, State) and state.state not in (None, "*"):
            names.add(state.state)
        elif isclass(state) and issubclass(state, StatesGroup):
            names.update(s.state for s in state.__all_states__ if s.state)
        elif isinstance(state, str) and state != "*":
            names.add(state)
        else:
            return None
    return names


def message_gate(router: Router) -> MessageGate | None:
    """The gate of the tree's message handlers, or None when one of them may take a message
    without a command or state (then every message must be offered)."""
    commands: set[str] = set()
    prefixes: set[str] = set()
    states: set[str] = set()
    for handler in _handlers(router, "message"):
        filters = _filters(handler)
        command = next((f for f in filters if isinstance(f, Command)), None)
        state = next((f for f in filters if isinstance(f, StateFilter)), None)
        if command is not None and all(isinstance(c, str) for c in command.commands):
            commands.update(c for c in command.commands if isinstance(c, str))
            prefixes.update(command.prefix)
        elif state is not None and (names := _state_names(state.states)) is not None:
            states.update(names)
        else:
            return None
    return MessageGate(commands, "".join(sorted(prefixes)), states)


def callback_gate(router: Router) -> CallbackGate | None:
    """The gate of the tree's callback query handlers, or None when one of them may take
    data without a ``CallbackData`` prefix."""
    prefixes: dict[str, set[str]] = {}
    for handler in _handlers(router, "callback_query"):
        data = next((f for f in _filters(handler) if isinstance(f, CallbackQueryFilter)), None)
        if data is None:
            return None
        cls = data.callback_data
        prefixes.setdefault(cls.__separator__, set()).add(cls.__prefix__)
    return CallbackGate({sep: frozenset(names) for sep, names in prefixes.items()})


def callback_prefixes(*routers: Router) -> frozenset[str]:
    """The ``CallbackData`` prefixes (``__prefix__``) of every callback handler's filter in
    the trees of ``routers``."""
    return frozenset(
        data.callback_data.__prefix__
        for router in routers
        for handler in _handlers(router, "callback_query")
        for data in _filters(handler)
        if isinstance(data, CallbackQueryFilter)
    )


def gate_tree(router: Router) -> None:
    """Install the gates on ``router`` (call it once its sub-routers are included); an
    observer whose handlers cannot be gated keeps taking everything."""
    if (gate := message_gate(router)) is not None:
        router.message.filter(gate)
    if (data_gate := callback_gate(router)) is not None:
        router.callback_query.filter(data_gate)


def _skippable(router: Router, update_type: str) -> TelegramEventObserver | None:
    """The sub-router's observer of ``update_type`` when its root filters may be asked
    before entering it: it has root filters and no outer middleware (aiogram runs outer
    middlewares before the root filters, so a router with one must be entered)."""
    observer = router.observers.get(update_type)
    if observer is None or observer.outer_middleware or not observer._handler.filters:
        return None
    return observer


class GatedRouter(Router):
    """A ``Router`` that asks each sub-router's root filters (the gates of ``gate_tree``)
    before entering it, and skips a sub-router whose filters say no.

    The same outcome as aiogram's propagation: a sub-router whose root filters fail
    returns ``UNHANDLED`` at once there too, and one without root filters, or with an outer
    middleware on the observer, is entered as before. Only the cost of entering differs.
    """

    async def _propagate_event(
        self,
        observer: TelegramEventObserver | None,
        update_type: str,
        event: TelegramObject,
        **kwargs: Any,
    ) -> Any:
        # aiogram's Router._propagate_event (3.x), with the sub-router check added
        response = UNHANDLED
        if observer:
            result, data = await observer.check_root_filters(event, **kwargs)
            if not result:
                return UNHANDLED
            kwargs.update(data)
            response = await observer.trigger(event, **kwargs)
            if response is REJECTED:  # pragma: no cover
                return UNHANDLED
            if response is not UNHANDLED:
                return response
        for router in self.sub_routers:
            gated = _skippable(router, update_type)
            if gated is not None:
                kwargs["event_router"] = router
                passed, _ = await gated.check_root_filters(event, **kwargs)
                if not passed:
                    continue
            response = await router.propagate_event(update_type=update_type, event=event, **kwargs)
            if response is not UNHANDLED:
                break
        return response
