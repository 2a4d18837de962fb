"""The one way the bot builds message text: ``Html``, text that is safe to send in Telegram's
HTML parse mode (the bot's default, ``DefaultBotProperties(parse_mode=HTML)``).

A template (a translation from the catalogs, a literal in the code) is trusted markup; every
value put into it is escaped, unless it is ``Html`` already (a fragment built here, such as
``bold(...)``). Concatenating, joining and ``%``-formatting ``Html`` escape the plain strings
they meet the same way, so a name, a description, a reason, a material name or an error text
can never break the markup or inject a tag or a link, and is never escaped twice::

    text = html(_("Hello, {name}!"), name=user.full_name)       # "Anna <3" -> Anna &lt;3
    screen = lines(bold(_("Inventory")), text, f"#{row_id}")    # every line escaped or Html

Escaping is aiogram's ``html.quote``: ``<``, ``>`` and ``&``, the characters Telegram's HTML
mode needs escaped (https://core.telegram.org/bots/api#html-style). ``Html`` is
``markupsafe.Markup`` with that escape function.

Text that Telegram does not parse (a callback query's alert, a button label, a reply sent
with ``parse_mode=None``) is plain: ``plain`` fills a template without escaping. Formatting a
template any other way (``str.format``, ``%``, an f-string around a value, ``"\\n".join``)
is what ``tests/unit/test_render.py`` refuses in the modules that build messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiogram.utils.text_decorations import html_decoration
from markupsafe import Markup


class Html(Markup):
    """A ``str`` of valid Telegram HTML; values combined with it are escaped (``quote``)."""

    __slots__ = ()

    @classmethod
    def escape(cls, s: Any) -> Html:
        """``s`` as Html: unchanged when it is Html (has ``__html__``), else quoted."""
        if hasattr(s, "__html__"):
            return cls(s.__html__())
        return cls(html_decoration.quote(str(s)))


def escape(value: Any) -> Html:
    """``value`` (any object, as ``str``) as Html with ``<``, ``>`` and ``&`` escaped."""
    return Html.escape(value)


def html(template: str, /, **values: Any) -> Html:
    """``template`` (trusted markup: a translation or a literal) with ``{name}`` fields filled
    with ``values``, each escaped unless it is Html. Format specs work (``{n:+d}``)."""
    return Html(template).format(**values)


def html_map(template: str, values: Mapping[str, Any]) -> Html:
    """``html`` with the values in a mapping (one with ``__missing__`` can keep unknown
    fields, as the outbox renderer does for a parameter a row lacks)."""
    return Html(template).format_map(values)


def lines(*parts: Any) -> Html:
    """``parts`` (Html, plain text, numbers, or iterables of them) one per line; plain parts
    are escaped. None is skipped."""
    flat: list[Any] = []
    for part in parts:
        if part is None:
            continue
        if isinstance(part, Iterable) and not isinstance(part, str):
            flat.extend(item for item in part if item is not None)
        else:
            flat.append(part)
    return Html("\n").join(flat)


def join(separator: str, parts: Iterable[Any]) -> Html:
    """``parts`` joined by ``separator`` (trusted markup); plain parts are escaped."""
    return Html(separator).join(parts)


def bold(text: Any) -> Html:
    """``<b>text</b>`` with ``text`` escaped unless it is Html."""
    return html("<b>{text}</b>", text=text)


def italic(text: Any) -> Html:
    """``<i>text</i>`` with ``text`` escaped unless it is Html."""
    return html("<i>{text}</i>", text=text)


def plain(template: str, /, **values: Any) -> str:
    """``template`` with ``{name}`` fields filled, not escaped: for text Telegram shows as it
    is (a callback query's alert, a button label, a message sent with ``parse_mode=None``)."""
    return str(template).format(**values)


def cut(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when it was longer
    (cut before escaping: a cut inside an escaped entity would break the markup)."""
    value = text or ""
    return value if len(value) <= limit else value[: limit - 1] + "…"
