"""Every code a screen shows (a state, a request status, a history kind, a notification
template, an error category or severity, a health figure or status, an outbox status, a
recovery action) has a label, every label is in the catalogs, and in Russian and Uzbek it
reads in that language: a translation equal to the English text fails unless the word is a
true loanword of ``LOANWORDS``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from bot.i18n import create_i18n
from bot.notification_texts import TEMPLATES
from handlers import texts
from handlers.admin import errors, history, retries, stuck_views
from handlers.labels import HEALTH_FIGURE_MSGIDS as FIGURE_LABELS
from handlers.labels import HEALTH_STATUS_MSGIDS as STATUS_LABELS
from recovery import workflow_definitions as wf
from recovery.classification import ErrorCategory, ErrorSeverity
from recovery.workflows import RecoveryAction
from tests.unit.test_catalogs import _catalog

# the same word in ru/uz as in en is right only for these (none today: every label of the
# screens is a word of the language); add a loanword here with the reason
LOANWORDS: dict[str, set[str]] = {"ru": set(), "uz": set()}

# the values the database allows (migration 0001's check constraints)
REQUEST_STATUSES = {"active", "completed", "cancelled"}
TRANSITION_KINDS = {"create", "normal", "assign", "force", "reset", "complete", "reassign"}
OUTBOX_STATUSES = {"pending", "sending", "sent", "retrying", "dead", "skipped", "discarded"}

LABEL_MAPS: dict[str, Mapping[Any, Any]] = {
    "states": texts.STATE_LABELS,
    "roles": texts.ROLE_LABELS,
    "workflows": texts.WORKFLOW_LABELS,
    "request statuses": texts.REQUEST_STATUS_LABELS,
    "history kinds": texts.TRANSITION_KIND_LABELS,
    "templates": texts.TEMPLATE_LABELS,
    "error categories": errors.CATEGORY_LABELS,
    "error severities": errors.SEVERITY_LABELS,
    "error group statuses": errors.GROUP_STATUS_LABELS,
    "health figures": FIGURE_LABELS,
    "health statuses": STATUS_LABELS,
    "outbox statuses": retries.STATUS_LABELS,
    "recovery actions": stuck_views.ACTION_NAMES,
    "recovery buttons": stuck_views.BUTTON_LABELS,
    "stuck reasons": stuck_views.REASON_LABELS,
    "refusals": stuck_views.SHORT_REFUSALS,
    "admin actions": history.ACTION_LABELS,
}


def _codes_without_label(codes: Iterable[str], labels: Mapping[Any, Any]) -> set[str]:
    return {str(code) for code in codes} - {str(key) for key in labels}


@pytest.mark.parametrize(
    ("codes", "labels"),
    [
        ({s.state for steps in wf.WORKFLOWS.values() for s in steps}, texts.STATE_LABELS),
        ({s.role for steps in wf.WORKFLOWS.values() for s in steps if s.role}, texts.ROLE_LABELS),
        (set(wf.WORKFLOWS), texts.WORKFLOW_LABELS),
        (REQUEST_STATUSES, texts.REQUEST_STATUS_LABELS),
        (TRANSITION_KINDS, texts.TRANSITION_KIND_LABELS),
        (set(TEMPLATES), texts.TEMPLATE_LABELS),
        ({c.value for c in ErrorCategory}, errors.CATEGORY_LABELS),
        ({s.value for s in ErrorSeverity}, errors.SEVERITY_LABELS),
        (OUTBOX_STATUSES, retries.STATUS_LABELS),
        (set(RecoveryAction), stuck_views.ACTION_NAMES),
        ({a.value for a in RecoveryAction}, history.ACTION_LABELS),
    ],
    ids=[
        "states",
        "roles",
        "workflows",
        "request statuses",
        "history kinds",
        "templates",
        "error categories",
        "error severities",
        "outbox statuses",
        "recovery actions",
        "audited recovery actions",
    ],
)
def test_every_code_has_a_label(codes: set[str], labels: Mapping[Any, Any]) -> None:
    assert not _codes_without_label(codes, labels)


def _english(value: Any) -> str:
    """The English text of a label (a lazy gettext proxy or a plain msgid)."""
    i18n = create_i18n("en")
    with i18n.context(), i18n.use_locale("en"):
        return str(value)


@pytest.mark.parametrize("locale", ["ru", "uz"])
@pytest.mark.parametrize("name", sorted(LABEL_MAPS))
def test_labels_are_translated_into_the_language(name: str, locale: str) -> None:
    catalog = _catalog(locale)
    msgids = {_english(value) for value in LABEL_MAPS[name].values()}
    missing = sorted(m for m in msgids if not catalog.get(m))
    assert not missing, f"{name}: not in the {locale} catalog: {missing}"
    same = sorted(m for m in msgids if catalog[m] == m and m not in LOANWORDS[locale])
    assert not same, f"{name}: {locale} shows these in English: {same}"


@pytest.mark.parametrize(
    ("locale", "line"),
    [
        ("en", "#7 repair · in work · 1d 2h"),
        ("ru", "#7 ремонт · в работе · 1д 2ч"),
        ("uz", "#7 taʼmirlash · ishda · 1k 2s"),
    ],
)
def test_the_stuck_digest_names_type_state_and_time(locale: str, line: str | None) -> None:
    from bot.notification_texts import make_renderer

    render = make_renderer(create_i18n("en"))
    params = {"count": 2, "ids": "#7, #8", "items": [[7, "repair", "in_work", 26 * 3600]]}
    text = str(render("admin.stuck_digest", params, locale))
    first = text.splitlines()[1]
    if line is not None:
        assert first == line
    assert "repair" not in first or locale == "en"
    assert text.splitlines()[2] == "… (+1)"
