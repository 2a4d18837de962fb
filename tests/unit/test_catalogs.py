"""The gettext catalogs cover every message the code marks for translation (``_``, ``__``
and ``ngettext`` with its plural), each with as many plural forms as its language has."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "bot" / "locales"
SOURCE_DIRS = ("bot", "handlers", "middlewares", "recovery")


KEYWORDS = {"_": None, "__": None, "ngettext": (1, 2)}
NPLURALS = {"en": 2, "ru": 3, "uz": 1}
PLURAL_SEPARATOR = "\x00"


def _code_messages() -> dict[str, str | None]:
    """msgid -> its plural (None for a message without one)."""
    messages: dict[str, str | None] = {}
    for directory in SOURCE_DIRS:
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / directory, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            if isinstance(message, str) and message:
                messages[message] = None
            elif isinstance(message, tuple) and message[0]:
                messages[message[0]] = message[1]
    return messages


def _code_msgids() -> set[str]:
    return set(_code_messages())


def _read(locale: str):  # type: ignore[no-untyped-def]
    with (LOCALES / locale / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        return read_po(po_file, locale=locale)


def _catalog(locale: str) -> dict[str, str]:
    """msgid -> translation; a plural message's forms joined by ``PLURAL_SEPARATOR``."""
    out: dict[str, str] = {}
    for m in _read(locale):
        if not m.id:
            continue
        if isinstance(m.id, tuple):
            forms = [str(s or "") for s in m.string]
            out[str(m.id[0])] = PLURAL_SEPARATOR.join(forms) if all(forms) else ""
        else:
            out[str(m.id)] = str(m.string or "")
    return out


def test_code_marks_messages_for_translation() -> None:
    assert len(_code_msgids()) > 50


@pytest.mark.parametrize("locale", ["en", "ru", "uz"])
def test_every_msgid_is_in_the_catalog(locale: str) -> None:
    missing = _code_msgids() - set(_catalog(locale))
    assert not missing, f"{locale}: add these msgids to messages.po: {sorted(missing)}"


@pytest.mark.parametrize("locale", ["ru", "uz"])
def test_every_msgid_is_translated(locale: str) -> None:
    catalog = _catalog(locale)
    untranslated = sorted(m for m in _code_msgids() if not catalog.get(m))
    assert not untranslated, f"{locale}: translate these: {untranslated}"


@pytest.mark.parametrize("locale", ["ru", "uz"])
def test_translations_keep_the_placeholders(locale: str) -> None:
    import re

    placeholder = re.compile(r"\{(\w+)\}")
    broken = [
        msgid
        for msgid, text in _catalog(locale).items()
        if text
        and any(
            set(placeholder.findall(msgid)) != set(placeholder.findall(t))
            for t in text.split(PLURAL_SEPARATOR)
        )
    ]
    assert not broken, f"{locale}: placeholders differ in {broken}"


@pytest.mark.parametrize("locale", ["en", "ru", "uz"])
def test_plural_messages_have_the_forms_of_their_language(locale: str) -> None:
    """Russian has three forms (1, 2-4, 5-20), Uzbek one, English two; each plural message of
    the code is a plural in the catalog with exactly that many forms."""
    catalog = _read(locale)
    assert catalog.num_plurals == NPLURALS[locale]
    plurals = {m for m, plural in _code_messages().items() if plural is not None}
    assert plurals, "the code uses ngettext"
    found = {str(m.id[0]): m for m in catalog if isinstance(m.id, tuple)}
    assert plurals <= set(found), f"{locale}: not plurals: {sorted(plurals - set(found))}"
    wrong = [m for m in plurals if len(found[m].string) != NPLURALS[locale]]
    assert not wrong, f"{locale}: wrong number of forms in {wrong}"
