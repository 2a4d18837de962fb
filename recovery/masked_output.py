"""Masking applied to what leaves the process: every string of a structured value (an error's
context) and every log record (its message and stack trace). The patterns themselves are
``recovery.masking.mask_sensitive``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from recovery.masking import mask_sensitive


def mask_value(value: Any, *, extra_secrets: Iterable[str] = ()) -> Any:
    """``value`` with every string in it masked (dicts, lists and tuples are walked)."""
    secrets = tuple(extra_secrets)
    if isinstance(value, str):
        return mask_sensitive(value, extra_secrets=secrets)
    if isinstance(value, Mapping):
        return {key: mask_value(item, extra_secrets=secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item, extra_secrets=secrets) for item in value]
    return value


class MaskingFilter(logging.Filter):
    """A logging filter that masks sensitive data in every record's final message and in its
    formatted exception (stack trace)."""

    def __init__(self, extra_secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.extra_secrets = extra_secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_sensitive(message, extra_secrets=self.extra_secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_sensitive(record.exc_text, extra_secrets=self.extra_secrets)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True
