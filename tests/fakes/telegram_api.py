"""A small, faithful fake of the Telegram Bot API (https://core.telegram.org/bots/api) over HTTP.

The bot under test talks to it exactly as to api.telegram.org, e.g. with aiogram::

    async with FakeTelegramAPI(token=TOKEN) as api:        # or: base_url = await api.start()
        bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(api.base_url)))
        api.push_message(42, "/start")                     # the bot receives it via getUpdates
        await api.wait_for(lambda: api.last_message(42))   # ... and answers with sendMessage

Error bodies are Telegram's own; inject them with e.g.
``api.fail_next("sendMessage", **retry_after(7))`` or
``api.fail_next("sendMessage", **BOT_BLOCKED, chat_id=42)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import itertools
import json
import mimetypes
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NotRequired, Self, TypedDict, TypeVar

from aiohttp import web

T = TypeVar("T")
Json = dict[str, Any]

DEFAULT_TOKEN = "123456789:AAF-fake-telegram-token_0123456789abc"


class ErrorSpec(TypedDict):
    """Keyword arguments of :meth:`FakeTelegramAPI.fail_next` describing one Telegram error."""

    error_code: int
    description: str
    parameters: NotRequired[Json | None]


def retry_after(seconds: int = 7) -> ErrorSpec:
    """Flood control: 429 "Too Many Requests: retry after N" with ``parameters.retry_after``."""
    return {
        "error_code": 429,
        "description": f"Too Many Requests: retry after {seconds}",
        "parameters": {"retry_after": seconds},
    }


def migrate_to_chat(new_chat_id: int = -100123) -> ErrorSpec:
    """A basic group was upgraded to a supergroup with id ``new_chat_id``."""
    return {
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": new_chat_id},
    }


BOT_BLOCKED: ErrorSpec = {
    "error_code": 403,
    "description": "Forbidden: bot was blocked by the user",
}
USER_DEACTIVATED: ErrorSpec = {"error_code": 403, "description": "Forbidden: user is deactivated"}
CHAT_NOT_FOUND: ErrorSpec = {"error_code": 400, "description": "Bad Request: chat not found"}
BAD_GATEWAY: ErrorSpec = {"error_code": 502, "description": "Bad Gateway"}
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
POLL_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


class ApiError(Exception):
    """A Telegram error answer; :meth:`body` is the JSON, the HTTP status is ``error_code``."""

    def __init__(self, error_code: int, description: str, parameters: Json | None = None) -> None:
        super().__init__(description)
        self.error_code, self.description, self.parameters = error_code, description, parameters

    def body(self) -> Json:
        """The JSON body Telegram sends (the HTTP status equals ``error_code``)."""
        body: Json = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass
class UploadedFile:
    """A file part of a multipart request (``attach://`` references are resolved to it)."""

    field_name: str
    filename: str | None
    content_type: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        """Length of the uploaded bytes."""
        return len(self.data)


@dataclass
class ApiCall:
    """One HTTP call the bot made: canonical method name, parsed params, time and the answer."""

    method: str
    params: Json
    timestamp: float
    response: Json | None = None

    @property
    def ok(self) -> bool:
        """Whether the fake answered ``"ok": true`` (False while a long poll is still pending)."""
        return bool(self.response and self.response["ok"])


@dataclass
class CallbackAnswer:
    """What the bot passed to answerCallbackQuery."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int | None


@dataclass
class _Chat:
    chat: Json
    user: Json | None
    instance: str
    next_id: int = 1
    messages: dict[int, Json] = field(default_factory=dict)  # every live message, by message_id


class _Described(NamedTuple):
    result: Any
    description: str


class _Injection(NamedTuple):
    method: str
    error: ApiError
    chat_id: int | str | None


_JSON_FIELDS = {"reply_markup", "entities", "caption_entities", "commands", "scope"}
_JSON_FIELDS |= {"allowed_updates", "reply_parameters", "link_preview_options"}
_INT_FIELDS = {"chat_id", "message_id", "offset", "limit", "timeout", "cache_time"}
_INT_FIELDS |= {"reply_to_message_id", "message_thread_id", "max_connections"}
_BOOL_FIELDS = {"show_alert", "disable_notification", "protect_content", "drop_pending_updates"}
_BOOL_FIELDS |= {"allow_sending_without_reply", "disable_web_page_preview"}
_CHAT_ACTIONS = {"typing", "upload_photo", "record_video", "upload_video", "record_voice"}
_CHAT_ACTIONS |= {"upload_voice", "upload_document", "choose_sticker", "find_location"}
_CHAT_ACTIONS |= {"record_video_note", "upload_video_note"}
_NOT_BY_DEFAULT = {"chat_member", "message_reaction", "message_reaction_count"}
_BOT_COMMAND = re.compile(r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>@])")
_HTML_ENTITY = re.compile(r"&(?:#x([0-9a-fA-F]+)|#([0-9]+)|([A-Za-z]+));?")
_HTML_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline"}
_HTML_TAGS |= {"ins": "underline", "s": "strikethrough", "strike": "strikethrough"}
_HTML_TAGS |= {"del": "strikethrough", "tg-spoiler": "spoiler", "span": "spoiler", "a": "text_link"}
_HTML_TAGS |= {"code": "code", "pre": "pre", "blockquote": "blockquote", "tg-emoji": "custom_emoji"}
_PRIORITY = {"blockquote": 0, "pre": 11, "code": 20, "text_link": 49, "bold": 90, "italic": 91}
_PRIORITY |= {"underline": 92, "strikethrough": 93, "spoiler": 94, "custom_emoji": 99}


def _u16(text: str) -> int:
    """Length in UTF-16 code units, the unit of MessageEntity offsets."""
    return len(text.encode("utf-16-le")) // 2


def command_entities(text: str) -> list[Json]:
    """``bot_command`` entities as Telegram detects them in incoming text (UTF-16 offsets)."""
    return [
        {"offset": _u16(text[: m.start()]), "length": _u16(m.group()), "type": "bot_command"}
        for m in _BOT_COMMAND.finditer(text)
    ]


def parse_html(src: str) -> tuple[str, list[Json]]:
    """Port of the Bot API's HTML parse mode: returns (plain text, entities) or raises ApiError."""
    out: list[str] = []
    entities: list[Json] = []
    stack: list[tuple[str, str, int, int]] = []  # tag, argument, utf16 offset, len(out)
    pos, u16 = 0, 0

    def fail(message: str, at: int, tail: str = "") -> ApiError:
        where = len(src[:at].encode())
        return _bad(f"can't parse entities: {message} at byte offset {where}{tail}")

    while pos < len(src):
        char = src[pos]
        if char == "&" and (m := _HTML_ENTITY.match(src, pos)):
            hex_code, dec_code, name = m.groups()
            code = int(hex_code, 16) if hex_code else int(dec_code) if dec_code else 0
            decoded = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(name or "")
            if decoded or 0 < code < 0x10FFFF:
                out.append(piece := decoded or chr(code))
                u16, pos = u16 + _u16(piece), m.end()
                continue
        if char != "<":
            out.append(char)
            u16, pos = u16 + _u16(char), pos + 1
            continue
        begin = pos
        if src.startswith("</", pos):
            if not stack:
                raise fail("Unexpected end tag", begin)
            if not (m := re.compile(r"</([^\s>]*)\s*>").match(src, pos)):
                raise fail("Unclosed end tag", begin)
            tag, argument, offset, out_index = stack.pop()
            if m.group(1) and m.group(1).lower() != tag:
                found = f', expected "</{tag}>", found "</{m.group(1)}>"'
                raise fail("Unmatched end tag", begin, found)
            pos = m.end()
            if u16 > offset:
                entity: Json = {"offset": offset, "length": u16 - offset, "type": _HTML_TAGS[tag]}
                last = entities[-1] if entities else {}
                same = (last.get("offset"), last.get("length")) == (offset, u16 - offset)
                if tag == "a":
                    entity["url"] = argument or "".join(out[out_index:])
                elif tag == "tg-emoji":
                    entity["custom_emoji_id"] = argument
                elif tag == "code" and argument:
                    entity["language"] = argument  # becomes "pre" language if inside <pre>
                elif tag == "pre" and same and last.get("type") == "code" and "language" in last:
                    entities.pop()
                    entity["language"] = last["language"]
                entities.append(entity)
            continue
        m = re.compile(r"<([^\s>]*)").match(src, pos)
        assert m is not None
        tag = m.group(1).lower()
        if m.end() >= len(src):
            raise fail("Unclosed start tag", begin)
        if tag not in _HTML_TAGS:
            raise fail(f'Unsupported start tag "{tag}"', begin)
        attrs = re.compile(r"""\s*([^\s=>]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([\w.-]+))""")
        pos, argument = m.end(), ""
        while (am := attrs.match(src, pos)) is not None:
            value = "".join(v for v in am.groups()[1:] if v is not None)
            value = _HTML_ENTITY.sub(lambda e: parse_html(e.group())[0], value)
            name, pos = am.group(1).lower(), am.end()
            if (tag, name) in {("a", "href"), ("tg-emoji", "emoji-id")}:
                argument = value
            elif (tag, name) == ("code", "class") and value.startswith("language-"):
                argument = value.removeprefix("language-")
            elif (tag, name) == ("span", "class") and value.startswith("tg-"):
                argument = value.removeprefix("tg-")
        if not (end := re.compile(r"\s*>").match(src, pos)):
            raise fail(f'Unclosed start tag "{tag}" or bad attribute', begin)
        if tag == "span" and argument != "spoiler":
            raise fail('Tag "span" must have class "tg-spoiler"', begin)
        stack.append((tag, argument, u16, len(out)))
        pos = end.end()
    if stack:
        raise _bad(
            f"can't parse entities: Can't find end tag corresponding to start tag {stack[-1][0]}"
        )
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    return "".join(out), _sorted(entities)


def _sorted(entities: list[Json]) -> list[Json]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], _PRIORITY.get(e["type"], 50)))


def _trim(text: str, entities: list[Json]) -> tuple[str, list[Json]]:
    """Telegram strips leading/trailing whitespace from texts and captions, fixing entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift, size, fixed = _u16(text[: len(text) - len(text.lstrip())]), _u16(stripped), []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, size)
        if end > start:
            fixed.append({**entity, "offset": start, "length": end - start})
    return stripped, fixed


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG/JPEG/GIF, (512, 512) for WebP/BMP, None if not an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 9 <= len(data) and data[pos] == 0xFF:
            marker, (length,) = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
        return None
    if (data[:4] == b"RIFF" and data[8:12] == b"WEBP") or data[:2] == b"BM":
        return 512, 512
    return None


class FakeTelegramAPI:
    """In-process fake Bot API server (aiohttp) with a test-side API to drive and inspect it.

    ``reject_methods``: methods answering 400 "Bad Request: method is disabled".
    ``blocked_users``: user ids whose chats answer 403 "Forbidden: bot was blocked by the user"
    (a mutable set: add to it while a test runs).
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "fake_test_bot",
        bot_first_name: str = "Fake Test Bot",
        reject_methods: Iterable[str] = (),
        blocked_users: Iterable[int] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token, self.host, self.port = token, host, port
        prefix = token.split(":", 1)[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 1
        self.bot_user: Json = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.reject_methods = {name.lower() for name in reject_methods}
        self.blocked_users: set[int] = set(blocked_users)
        self.requests: list[ApiCall] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.commands: dict[tuple[str, str], list[Json]] = {}  # (scope JSON, language) -> list
        self.webhook: Json | None = None
        self.poll_count = 0
        self.base_url = ""
        self._chats: dict[int, _Chat] = {}
        self._pending: list[Json] = []
        self._queries: dict[str, bool] = {}  # callback query id -> answered
        self._files: dict[str, Json] = {}  # file_id -> Telegram file object
        self._injections: list[_Injection] = []
        self._allowed_updates: list[str] = []
        self._update_ids = itertools.count(100_000_001)
        self._ids = itertools.count(1)
        self._poll_generation = 0
        self._changed = asyncio.Event()
        self._closing = False
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None
        handlers: list[Callable[[Json], Any]] = [
            self.getMe, self.getUpdates, self.setWebhook, self.deleteWebhook, self.getWebhookInfo,
            self.setMyCommands, self.deleteMyCommands, self.getMyCommands, self.sendMessage,
            self.editMessageText, self.editMessageReplyMarkup, self.answerCallbackQuery,
            self.sendPhoto, self.sendDocument, self.deleteMessage, self.sendChatAction,
            self.close, self.logOut,
        ]  # fmt: skip
        self._methods = {h.__name__.lower(): h for h in handlers}

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Listen on ``host:port`` (port 0 = any free port); return ``http://host:port``."""
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._started, self._closing = time.monotonic(), False
        return self.base_url

    async def stop(self) -> None:
        """Answer pending long polls with ``[]`` and shut the server down."""
        self._closing = True
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- test side: input
    def add_user(
        self, user_id: int, first_name: str, language_code: str = "en", username: str | None = None
    ) -> Json:
        """Register a user who has a private chat with the bot; return the User object."""
        user: Json = {"id": user_id, "is_bot": False, "first_name": first_name}
        chat: Json = {"id": user_id, "first_name": first_name, "type": "private"}
        if username:
            user["username"] = chat["username"] = username
        user["language_code"] = language_code
        if user_id in self._chats:
            self._chats[user_id].user, self._chats[user_id].chat = user, chat
        else:
            self._chats[user_id] = _Chat(chat, user, str(7_000_000_000_000_000_000 + user_id))
        return user

    def push_update(self, update: Json) -> Json:
        """Queue an arbitrary Update (``update_id`` is assigned); return it.

        Like Telegram, updates of types excluded by the last ``allowed_updates`` are dropped.
        """
        update = {"update_id": next(self._update_ids), **update}
        kind = next(key for key in update if key != "update_id")
        allowed = self._allowed_updates
        if kind in allowed if allowed else kind not in _NOT_BY_DEFAULT:
            self._pending.append(update)
            self._wake()
        return copy.deepcopy(update)

    def push_message(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str | None = None,
        language_code: str | None = None,
    ) -> Json:
        """Queue an Update with a private text Message from ``user_id``; return the Update.

        Unknown users are registered (first_name defaults to ``User<id>``, language to "en");
        for known users the given first_name/language_code update their profile.
        """
        chat = self._chats.get(user_id)
        user = chat.user if chat and chat.user else {}
        if not user or first_name or language_code:
            name = first_name or user.get("first_name") or f"User{user_id}"
            language = language_code or user.get("language_code") or "en"
            self.add_user(user_id, name, language, user.get("username"))
            chat = self._chats[user_id]
        content: Json = {"text": text}
        if entities := command_entities(text):
            content["entities"] = entities
        return self.push_update({"message": self._new_message(chat, chat.user, content)})

    def push_media(self, user_id: int, kind: str = "photo") -> Json:
        """Queue an Update with a private Message from a known ``user_id`` carrying a photo
        or a sticker (``kind``) and no text; return the Update."""
        chat = self._chats[user_id]
        content: Json = (
            {"photo": [{"file_id": "p1", "file_unique_id": "pu1", "width": 90, "height": 90}]}
            if kind == "photo"
            else {
                "sticker": {
                    "file_id": "s1", "file_unique_id": "su1", "type": "regular", "width": 512,
                    "height": 512, "is_animated": False, "is_video": False,
                }
            }
        )  # fmt: skip
        return self.push_update({"message": self._new_message(chat, chat.user, content)})

    def push_callback(
        self, user_id: int, data: str, *, message_id: int | None = None, strict: bool = True
    ) -> Json:
        """Queue an Update with a CallbackQuery pressed on a bot message; return the Update.

        ``message_id`` defaults to the last message the bot sent to that chat. With ``strict``
        the message must carry an inline button with this ``callback_data``, since a real user
        can only press buttons that are shown.
        """
        chat = self._chats[user_id]
        message = self._bot_message(user_id, message_id)
        buttons = [b for row in self._keyboard(message) for b in row]
        if strict and data not in [b.get("callback_data") for b in buttons]:
            raise ValueError(f"message {message['message_id']} has no button with data {data!r}")
        query_id = str(4_000_000_000_000_000_000 + next(self._ids))
        self._queries[query_id] = False
        query = {"id": query_id, "from": chat.user, "message": message}
        return self.push_update(
            {"callback_query": {**query, "chat_instance": chat.instance, "data": data}}
        )

    def press_button(self, user_id: int, text: str, *, message_id: int | None = None) -> Json:
        """Press the inline button labelled ``text`` (callback buttons only); return the Update."""
        for row in self._keyboard(self._bot_message(user_id, message_id)):
            for button in row:
                if button["text"] == text and "callback_data" in button:
                    return self.push_callback(
                        user_id, button["callback_data"], message_id=message_id
                    )
        raise ValueError(f"no callback button {text!r} in the message")

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        parameters: Json | None = None,
        times: int = 1,
        chat_id: int | str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (optionally only for ``chat_id``) with
        Telegram's error body, e.g. ``fail_next("sendMessage", **retry_after(7))``."""
        error = ApiError(error_code, description, parameters)
        self._injections += [_Injection(method.lower(), error, chat_id)] * times

    # ----------------------------------------------------------------- test side: inspection
    @property
    def sent(self) -> list[ApiCall]:
        """Every call except getUpdates polling, oldest first."""
        return [call for call in self.requests if call.method != "getUpdates"]

    def calls(self, method: str) -> list[ApiCall]:
        """Recorded calls of one method (case-insensitive)."""
        return [call for call in self.requests if call.method.lower() == method.lower()]

    def messages_to(self, chat_id: int) -> list[Json]:
        """Current state (after edits, without deleted ones) of the bot's messages in a chat."""
        chat = self._chats.get(chat_id)
        messages = chat.messages.values() if chat else []
        return [copy.deepcopy(m) for m in messages if m["from"]["id"] == self.bot_id]

    def last_message(self, chat_id: int) -> Json | None:
        """The bot's most recent live message in the chat, or None."""
        messages = self.messages_to(chat_id)
        return messages[-1] if messages else None

    def get_commands(self, scope: Json | None = None, language_code: str = "") -> list[Json]:
        """Commands set for a scope (default ``{"type": "default"}``) and language."""
        return self.commands.get((_scope_key(scope), language_code), [])

    @property
    def pending_updates(self) -> list[Json]:
        """Updates not yet confirmed by the bot."""
        return copy.deepcopy(self._pending)

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:  # noqa: ASYNC109
        """Poll ``predicate()`` until truthy and return its value; AssertionError on timeout.

        An exception raised by the predicate (e.g. ``last_message(42)["text"]`` before the bot
        answered) counts as "not yet" and is shown in the timeout message.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                if value := predicate():
                    return value
                problem = ""
            except Exception as error:
                problem = f" (last predicate error: {error!r})"
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s{problem}\n{self.dump()}")
            await asyncio.sleep(0.02)

    async def wait_until_polling(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Resolve once the bot has called getUpdates at least once."""
        await self.wait_for(lambda: self.poll_count > 0, timeout)

    def dump(self, last: int = 10) -> str:
        """Human-readable summary of the last calls, for assertion messages."""
        lines = [f"getUpdates calls: {self.poll_count}, pending updates: {len(self._pending)}"]
        for call in self.sent[-last:]:
            answer = "pending" if call.response is None else json.dumps(call.response, default=str)
            params = json.dumps(call.params, default=repr, ensure_ascii=False)
            lines.append(f"  {call.method} {params[:300]} -> {answer[:300]}")
        return "\n".join(lines)

    # ----------------------------------------------------------------- HTTP plumbing
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _reply(ApiError(401, "Unauthorized").body())
        handler = self._methods.get(request.match_info["method"].lower())
        if handler is None:
            return _reply(ApiError(404, "Not Found").body())
        call = ApiCall(handler.__name__, await _read_params(request), time.time())
        self.requests.append(call)
        try:
            call.params = _normalize(call.params)
            if handler.__name__.lower() in self.reject_methods:
                raise _bad("method is disabled")
            self._inject(handler.__name__.lower(), call.params)
            result = handler(call.params)
            result = await result if inspect.isawaitable(result) else result
            if isinstance(result, _Described):
                body = {"ok": True, "result": result.result, "description": result.description}
            else:
                body = {"ok": True, "result": copy.deepcopy(result)}
        except ApiError as error:
            body = error.body()
        call.response = body
        return _reply(body)

    def _inject(self, method: str, params: Json) -> None:
        for injection in self._injections:
            chat_ok = injection.chat_id is None or str(injection.chat_id) == str(
                params.get("chat_id")
            )
            if injection.method == method and chat_ok:
                self._injections.remove(injection)
                raise injection.error

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _new_message(self, chat: _Chat, sender: Json, content: Json) -> Json:
        message_id, chat.next_id = chat.next_id, chat.next_id + 1
        message = {"message_id": message_id, "from": sender, "chat": chat.chat}
        chat.messages[message_id] = message = {**message, "date": int(time.time()), **content}
        return copy.deepcopy(message)

    def _bot_message(self, user_id: int, message_id: int | None) -> Json:
        chat = self._chats[user_id]
        mine = [m for m in chat.messages.values() if m["from"]["id"] == self.bot_id]
        found = [m for m in mine if message_id in (None, m["message_id"])]
        if not found:
            raise ValueError(f"the bot has no message {message_id or ''} in chat {user_id}")
        return copy.deepcopy(found[-1])

    @staticmethod
    def _keyboard(message: Json) -> list[list[Json]]:
        return message.get("reply_markup", {}).get("inline_keyboard", [])

    def _chat(self, params: Json) -> _Chat:
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise _bad("chat_id is empty")
        if chat_id in self.blocked_users:
            raise ApiError(**BOT_BLOCKED)
        if not isinstance(chat_id, int) or chat_id not in self._chats:
            raise ApiError(**CHAT_NOT_FOUND)
        return self._chats[chat_id]

    def _message(self, params: Json, action: str) -> tuple[_Chat, Json]:
        if params.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._chat(params)
        message = chat.messages.get(params.get("message_id"))  # type: ignore[arg-type]
        if message is None:
            raise _bad(f"message to {action} not found")
        return chat, message

    def _formatted(self, params: Json, key: str, entities_key: str, limit: int) -> tuple[str, Json]:
        """Parse ``params[key]`` per parse_mode/entities; return (text, {key, entities_key})."""
        text, entities = str(params.get(key) or ""), params.get(entities_key) or []
        mode = str(params.get("parse_mode") or "").lower()
        if mode not in ("", "html", "markdown", "markdownv2"):
            raise _bad("unsupported parse_mode")
        if mode == "html" and not entities:
            text, entities = parse_html(text)
        text, entities = _trim(text, _sorted(entities))
        if _u16(text) > limit:
            raise _bad("message is too long" if key == "text" else "message caption is too long")
        fields: Json = {key: text} if text else {}
        return text, fields | ({entities_key: entities} if entities and text else {})

    def _markup(self, params: Json) -> Json:
        """Validate reply_markup; return ``{"reply_markup": ...}`` if it is echoed in a Message."""
        markup = params.get("reply_markup")
        if not markup:
            return {}
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard", []):
            for button in row:
                if set(button) <= {"text"}:
                    raise _bad(
                        "can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _bad("BUTTON_DATA_INVALID")
        return {"reply_markup": markup} if markup.get("inline_keyboard") else {}

    def _reply_to(self, chat: _Chat, params: Json) -> Json:
        reply = params.get("reply_parameters") or {}
        message_id = reply.get("message_id") or params.get("reply_to_message_id")
        if not message_id:
            return {}
        if (replied := chat.messages.get(int(message_id))) is not None:
            return {"reply_to_message": copy.deepcopy(replied)}
        if reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply"):
            return {}
        raise _bad("message to be replied not found")

    def _input_file(self, params: Json, key: str, kind: str) -> tuple[Json, bytes | None]:
        """Resolve an InputFile param to (Telegram file object, uploaded bytes or None)."""
        value = params.get(key)
        if isinstance(value, UploadedFile):
            if not value.data:
                raise _bad("file must be non-empty")
            n = next(self._ids)
            info = {
                "file_id": f"fake-{kind}-{n}",
                "file_unique_id": f"uniq{n}",
                "file_size": value.size,
            }
            if kind == "document":
                mime = mimetypes.guess_type(value.filename or "")[0] or "application/octet-stream"
                info |= {"file_name": value.filename or key, "mime_type": mime}
            self._files[info["file_id"]] = info
            return copy.deepcopy(info), value.data
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            n = next(self._ids)
            return {"file_id": f"fake-{kind}-{n}", "file_unique_id": f"uniq{n}"}, None
        if isinstance(value, str) and value in self._files:
            return copy.deepcopy(self._files[value]), None
        if not value:
            raise _bad(f"there is no {kind} in the request")
        raise _bad("wrong file identifier/HTTP URL specified")

    # ----------------------------------------------------------------- Bot API methods
    def getMe(self, params: Json) -> Json:
        return self.bot_user | {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def getUpdates(self, params: Json) -> list[Json]:
        if self.webhook:
            raise ApiError(409, WEBHOOK_CONFLICT)
        self.poll_count += 1
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        if offset < 0:
            self._pending = self._pending[offset:]
        elif offset:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
        if "allowed_updates" in params:
            self._allowed_updates = list(params["allowed_updates"] or [])
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake()  # a newer getUpdates terminates an older, still waiting one
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(int(params.get("timeout") or 0), 0)
        while not self._closing:
            if generation != self._poll_generation:
                raise ApiError(409, POLL_CONFLICT)
            if self._pending or loop.time() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        return copy.deepcopy(self._pending[: min(max(limit, 1), 100)])

    def setWebhook(self, params: Json) -> _Described:
        url = str(params.get("url") or "")
        if not url:
            self.webhook = None
            return _Described(True, "Webhook was deleted")
        if not url.startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = {"url": url, "max_connections": params.get("max_connections") or 40}
        return _Described(True, "Webhook was set")

    def deleteWebhook(self, params: Json) -> _Described:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        was_set, self.webhook = self.webhook is not None, None
        return _Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    def getWebhookInfo(self, params: Json) -> Json:
        info = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        return info | (self.webhook or {})

    def _command_scope(self, params: Json) -> None:
        """Telegram's checks of ``scope`` and ``language_code`` (Bot API, BotCommandScope;
        a language code is empty or two letters of ISO 639-1): a known scope type, the
        chat of a chat scope known to the bot, a user id where one is required."""
        code = params.get("language_code")
        if code not in (None, "") and not re.fullmatch(r"[a-z]{2}", str(code)):
            raise _bad("invalid language code specified")
        scope = params.get("scope")
        if scope is None:
            return
        if not isinstance(scope, dict) or scope.get("type") not in COMMAND_SCOPES:
            raise _bad("can't parse BotCommandScope JSON object")
        kind = scope["type"]
        if kind in ("chat", "chat_administrators", "chat_member"):
            self._chat({"chat_id": scope.get("chat_id")})
        if kind == "chat_member" and not isinstance(scope.get("user_id"), int):
            raise _bad("user not found")

    def setMyCommands(self, params: Json) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("commands must be an array of at most 100 BotCommand")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise _bad("command description is empty or too long")
        self._command_scope(params)
        key = (_scope_key(params.get("scope")), str(params.get("language_code") or ""))
        self.commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    def deleteMyCommands(self, params: Json) -> bool:
        self._command_scope(params)
        key = (_scope_key(params.get("scope")), str(params.get("language_code") or ""))
        self.commands.pop(key, None)
        return True

    def getMyCommands(self, params: Json) -> list[Json]:
        return self.get_commands(params.get("scope"), str(params.get("language_code") or ""))

    def sendMessage(self, params: Json) -> Json:
        chat = self._chat(params)
        text, content = self._formatted(params, "text", "entities", 4096)
        if not text:
            raise _bad("message text is empty")
        content = self._reply_to(chat, params) | content | self._markup(params)
        return self._new_message(chat, self.bot_user, content)

    def editMessageText(self, params: Json) -> Json:
        _, message = self._message(params, "edit")
        text, content = self._formatted(params, "text", "entities", 4096)
        if not text:
            raise _bad("message text is empty")
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        return self._edit(message, content | self._markup(params), ("text", "entities"))

    def editMessageReplyMarkup(self, params: Json) -> Json:
        _, message = self._message(params, "edit")
        return self._edit(message, self._markup(params), ())

    def _edit(self, message: Json, new: Json, keys: tuple[str, ...]) -> Json:
        """Apply an edit; omitting reply_markup removes the inline keyboard, as on Telegram."""
        if message["from"]["id"] != self.bot_id:
            raise _bad("message can't be edited")
        keys += ("reply_markup",)
        if all(message.get(key) == new.get(key) for key in keys):
            raise _bad(NOT_MODIFIED.removeprefix("Bad Request: "))
        for key in keys:
            message.pop(key, None)
        message.update(new, edit_date=int(time.time()))
        return copy.deepcopy(message)

    def answerCallbackQuery(self, params: Json) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if self._queries.get(query_id, True):
            raise ApiError(400, QUERY_TOO_OLD)
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        self._queries[query_id] = True
        show_alert, url = bool(params.get("show_alert")), params.get("url")
        cache_time = params.get("cache_time")
        self.callback_answers.append(CallbackAnswer(query_id, text, show_alert, url, cache_time))
        return True

    def sendPhoto(self, params: Json) -> Json:
        chat = self._chat(params)
        info, data = self._input_file(params, "photo", "photo")
        if "width" not in info:
            size = (320, 320) if data is None else _image_size(data)
            if size is None:
                raise _bad("IMAGE_PROCESS_FAILED")
            if sum(size) > 10000 or max(size) > 20 * min(size):
                raise _bad("PHOTO_INVALID_DIMENSIONS")
            info |= {"width": size[0], "height": size[1]}
            self._files[info["file_id"]] = info
        photo = _photo_sizes(info)
        self._files |= {size["file_id"]: info for size in photo}  # any size can be re-sent
        _, content = self._formatted(params, "caption", "caption_entities", 1024)
        content = self._reply_to(chat, params) | {"photo": photo} | content | self._markup(params)
        return self._new_message(chat, self.bot_user, content)

    def sendDocument(self, params: Json) -> Json:
        chat = self._chat(params)
        document, _ = self._input_file(params, "document", "document")
        _, content = self._formatted(params, "caption", "caption_entities", 1024)
        content = self._reply_to(chat, params) | {"document": document} | content
        return self._new_message(chat, self.bot_user, content | self._markup(params))

    def deleteMessage(self, params: Json) -> bool:
        chat, message = self._message(params, "delete")
        del chat.messages[message["message_id"]]
        return True

    def sendChatAction(self, params: Json) -> bool:
        self._chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    def close(self, params: Json) -> bool:
        """Telegram refuses ``close`` with 429 during the first 10 minutes after launch."""
        if (left := 600 - int(time.monotonic() - self._started)) > 0:
            raise ApiError(**retry_after(left))
        return True

    def logOut(self, params: Json) -> bool:
        return True


COMMAND_SCOPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)


def _scope_key(scope: Json | None) -> str:
    return json.dumps(scope or {"type": "default"}, sort_keys=True)


def _photo_sizes(info: Json) -> list[Json]:
    """PhotoSize variants Telegram generates: longest side 90, 320, 800, 1280, 2560 at most."""
    width, height = info["width"], info["height"]
    sizes = []
    for limit in (90, 320, 800, 1280, 2560):
        scale = min(1.0, limit / max(width, height))
        size = {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}
        file_size = int(info.get("file_size", 0) * scale * scale) or None
        sizes.append(
            {
                "file_id": f"{info['file_id']}-{limit}",
                "file_unique_id": f"{info['file_unique_id']}-{limit}",
            }
        )
        sizes[-1] |= size | ({"file_size": file_size} if file_size else {})
        if scale == 1.0:
            break
    return sizes


async def _read_params(request: web.Request) -> Json:
    """Query string merged with a JSON, urlencoded or multipart body (file parts kept as such)."""
    params: Json = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        return params | (body if isinstance(body, dict) else {})
    for key, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            value = UploadedFile(key, value.filename, value.content_type, value.file.read())
        params[key] = value
    return params


def _normalize(raw: Json) -> Json:
    """Decode JSON-serialized fields, ints and booleans; resolve ``attach://`` references."""
    attached = {
        v.removeprefix("attach://")
        for v in raw.values()
        if isinstance(v, str) and v.startswith("attach://")
    }
    params: Json = {}
    for key, value in raw.items():
        if isinstance(value, UploadedFile) and key in attached:
            continue
        if isinstance(value, str) and value.startswith("attach://"):
            value = raw.get(value.removeprefix("attach://"), value)
        elif isinstance(value, str) and key in _JSON_FIELDS:
            try:
                value = json.loads(value)
            except ValueError:
                what = "reply keyboard markup" if key == "reply_markup" else key
                raise _bad(f"can't parse {what} JSON object") from None
        elif (
            isinstance(value, str) and key in _INT_FIELDS and re.fullmatch(r"-?\d+", value.strip())
        ):
            value = int(value)
        elif isinstance(value, str) and key in _BOOL_FIELDS:
            value = value.strip().lower() in ("true", "1")
        params[key] = value
    return params


def _reply(body: Json) -> web.Response:
    return web.json_response(body, status=body.get("error_code", 200))
