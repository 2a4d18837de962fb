"""``handlers.render``: the one way messages are built. Values are escaped once, fragments
built by it are not escaped again, and what it builds is valid Telegram HTML whatever a user
put in a name or a description. The modules that build messages use nothing else: no
``str.format`` on a template, no ``html.escape``, no ``"\\n".join`` of lines, no tag in a
string that is not an ``html()`` template (checked on their source)."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.i18n import create_i18n
from handlers.admin.errors import render_group
from handlers.admin.history import render_entry
from handlers.admin.inventory_discrepancy import render_discrepancy
from handlers.admin.retries_notification import render_notification
from handlers.render import Html, bold, cut, escape, html, join, lines, plain
from recovery.audit import HistoryEntry
from recovery.inventory import Discrepancy, DiscrepancyKind
from tests.fakes.telegram_api import parse_html

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ["Anna <3", "<b>Boris", "Tom & Jerry", '<a href="http://evil">x</a>', "&amp;", "</b>"]
NOW = dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.UTC)


def shown(text: str) -> str:
    """What Telegram shows for ``text`` in HTML mode (raises on invalid HTML)."""
    return parse_html(text)[0]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_are_escaped_and_shown_as_typed(value: str) -> None:
    text = html("Hello, {name}! <b>{n:+d}</b>", name=value, n=5)
    assert shown(text) == f"Hello, {value}! +5"
    assert shown(lines(bold(value), value, [value, None], 3)) == f"{value}\n{value}\n{value}\n3"
    assert shown(join(" · ", [escape(value), value])) == f"{value} · {value}"
    assert shown(Html("<i>x</i> ") + value) == f"x {value}"


def test_fragments_are_not_escaped_twice() -> None:
    inner = html("<b>{x}</b>", x="<")
    assert html("[{inner}]", inner=inner) == "[<b>&lt;</b>]"
    assert escape(escape("&")) == "&amp;"


def test_plain_text_is_not_escaped_and_cut_keeps_the_limit() -> None:
    assert plain("{a} & {b}", a="<x>", b=1) == "<x> & 1"
    assert cut("abcdef", 4) == "abc…" and cut(None, 3) == "" and cut("ab", 2) == "ab"


@given(st.text())
def test_any_text_is_valid_telegram_html_once_rendered(value: str) -> None:
    assert shown(html("<b>{v}</b> {v}", v=value)) == f"{value} {value}"


def test_screens_show_hostile_database_values_as_they_are() -> None:
    i18n = create_i18n("en")
    with i18n.context(), i18n.use_locale("en"):
        _check_screens()


def _check_screens() -> None:
    for value in HOSTILE:
        group = {
            "reference": "E-ABCDEF", "status": "open", "category": "system",
            "severity": "high", "error_type": value, "location": value, "message": value,
            "occurrence_count": 2, "first_seen_at": NOW, "last_seen_at": NOW,
            "resolved_at": None,
        }  # fmt: skip
        assert shown(render_group(group)).count(value) == 3
        entry = HistoryEntry(
            "dashboard", NOW, value, 1, "notification.retry", "notification", value, False,
            value, "not_retryable: sent",
        )  # fmt: skip
        text = shown(render_entry(entry))
        assert text.count(value) == 3 and "refused" in text and "sent" in text
        notification = {
            "id": 7, "status": "dead", "chat_id": 1, "template_key": value, "attempts": 5,
            "next_attempt_at": NOW, "last_error": value, "dead_reason": value,
            "request_id": None,
        }  # fmt: skip
        assert shown(render_notification(notification)).count(value) == 3
        discrepancy = Discrepancy(
            kind=DiscrepancyKind.DRIFT, fingerprint="material:1", material_id=1, amount=2,
            balance=1, ledger_sum=3, sku=value, id=4, status="open", reason=value,
        )  # fmt: skip
        assert shown(render_discrepancy(discrepancy)).count(value) == 2


# --- the modules that build messages use only the render helper ----------------------------
SOURCES = sorted(
    [
        *ROOT.glob("handlers/**/*.py"),
        *ROOT.glob("middlewares/*.py"),
        ROOT / "bot" / "notification_texts.py",
    ]
)
TAG = ("<b>", "</b>", "<i>", "</i>", "<a ", "<code>", "<pre>", "<u>", "<s>")


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    templates: set[int] = set()  # html() templates and docstrings: tags allowed
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            templates.add(id(node.value))  # a docstring
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name in ("html", "Html") and node.args:
                templates.add(id(node.args[0]))
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, target = node.func.attr, node.func.value
            if attr in ("format", "format_map"):
                found.append(f"{where}: str.{attr} (use render.html or render.plain)")
            if attr == "escape" and isinstance(target, ast.Name) and target.id == "html":
                found.append(f"{where}: html.escape (use render.html or render.escape)")
            if attr == "join" and isinstance(target, ast.Constant) and target.value == "\n":
                found.append(f'{where}: "\\n".join (use render.join or render.lines)')
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and any(tag in node.value for tag in TAG)
            and id(node) not in templates
        ):
            found.append(f"{where}: a tag outside an html() template")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_messages_are_built_only_through_the_render_helper(path: Path) -> None:
    if path.name == "render.py":
        return
    assert not _violations(path)


def test_the_source_check_catches_each_unsafe_form(tmp_path: Path) -> None:
    """The check above fails on the forms it forbids (so a pass means something)."""
    bad = ROOT / "handlers" / "_unsafe_example_for_test.py"
    bad.write_text(
        "import html\n"
        "a = _('Hi {n}').format(n=name)\n"
        "b = html.escape(name)\n"
        "c = '\\n'.join(lines)\n"
        "d = '<b>' + name + '</b>'\n"
    )
    try:
        assert len(_violations(bad)) == 5
    finally:
        bad.unlink()
