"""The gettext catalogs cover every message the code marks for translation."""

from __future__ import annotations

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
            keywords={"_": None, "__": None, "N_": (1, 2)},
        ):
            if message:
                messages.append(message)
    return messages


def _code_msgids() -> set[str]:
    return {m for m in _extracted() if isinstance(m, str)}


def _code_plurals() -> set[tuple[str, str]]:
    return {(m[0], m[1]) for m in _extracted() if isinstance(m, tuple)}


def _catalog(locale: str) -> dict[str, str]:
    with (LOCALES / locale / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        catalog = read_po(po_file, locale=locale)
    return {str(m.id): str(m.string or "") for m in catalog if m.id}


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
        if text and set(placeholder.findall(msgid)) != set(placeholder.findall(text))
    ]
    assert not broken, f"{locale}: placeholders differ in {broken}"


PLURAL_FORMS = {"en": 2, "ru": 3, "uz": 2}


@pytest.mark.parametrize("locale", ["en", "ru", "uz"])
def test_every_plural_msgid_has_each_plural_form(locale: str) -> None:
    with (LOCALES / locale / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        catalog = read_po(po_file, locale=locale)
    plurals = {tuple(m.id): m.string for m in catalog if isinstance(m.id, tuple | list)}
    assert _code_plurals(), "the code marks plural messages with N_"
    for pair in _code_plurals():
        forms = plurals.get(pair)
        assert forms is not None, f"{locale}: add the plural msgid {pair}"
        assert len(forms) == PLURAL_FORMS[locale] and all(forms), f"{locale}: {pair} -> {forms}"
        assert all("{n}" in form for form in forms), f"{locale}: {pair} lost its {{n}}"
