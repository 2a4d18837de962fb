"""The gettext catalogs cover every message the code marks for translation (``_``, ``__``,
and the plurals of ``N_`` and ``ngettext``), each plural with the forms of its language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "bot" / "locales"
SOURCE_DIRS = ("bot", "handlers", "middlewares", "recovery")


def _extracted() -> list[str | tuple[str, ...]]:
    messages: list[str | tuple[str, ...]] = []
    for directory in SOURCE_DIRS:
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / directory,
            method_map=[("**.py", "python")],
            keywords={"_": None, "__": None, "N_": (1, 2), "ngettext": (1, 2)},
        ):
            if message:
                messages.append(message)
    return messages


def _code_msgids() -> set[str]:
    return {m for m in _extracted() if isinstance(m, str)}


def _code_plurals() -> set[tuple[str, str]]:
    return {(m[0], m[1]) for m in _extracted() if isinstance(m, tuple)}


PLURAL_SEPARATOR = "\x00"
FIELD = re.compile(r"\{\w+\}")


def _catalog(locale: str) -> dict[str, str]:
    """msgid -> translation; a plural message under its singular msgid, its forms joined by
    ``PLURAL_SEPARATOR`` (empty when one form is missing)."""
    with (LOCALES / locale / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        catalog = read_po(po_file, locale=locale)
    out: dict[str, str] = {}
    for m in catalog:
        if not m.id:
            continue
        if isinstance(m.id, tuple | list):
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
            set(placeholder.findall(msgid)) != set(placeholder.findall(form))
            for form in text.split(PLURAL_SEPARATOR)
        )
    ]
    assert not broken, f"{locale}: placeholders differ in {broken}"


# Russian: 1, 21 / 2-4, 22-24 / 5-20; Uzbek: a noun after a number does not change, so
# both forms are the same text (docs/glossary.md)
PLURAL_FORMS = {"en": 2, "ru": 3, "uz": 2}


@pytest.mark.parametrize("locale", ["en", "ru", "uz"])
def test_every_plural_msgid_has_each_plural_form(locale: str) -> None:
    with (LOCALES / locale / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        catalog = read_po(po_file, locale=locale)
    plurals = {tuple(m.id): m.string for m in catalog if isinstance(m.id, tuple | list)}
    assert catalog.num_plurals == PLURAL_FORMS[locale]
    assert _code_plurals(), "the code marks plural messages with N_ and ngettext"
    for pair in _code_plurals():
        forms = plurals.get(pair)
        assert forms is not None, f"{locale}: add the plural msgid {pair}"
        assert len(forms) == PLURAL_FORMS[locale] and all(forms), f"{locale}: {pair} -> {forms}"
        fields = set(FIELD.findall(pair[1]))
        assert all(set(FIELD.findall(form)) == fields for form in forms), (
            f"{locale}: {pair} lost a field"
        )
