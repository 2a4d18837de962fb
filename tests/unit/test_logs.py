"""Log lines in text and JSON: the bound context of the work on every line, masked like the
error records, cleared when the work ends."""

from __future__ import annotations

import io
import json
import logging

import structlog
from pydantic import SecretStr

from bot.logs import TextFormatter, configure_logging, json_formatter
from bot.settings import Settings
from recovery.masked_output import MaskingFilter

TOKEN = "123456789:AAF-fake-telegram-token_0123456789abc"


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter(extra_secrets=(TOKEN,)))
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{id(formatter)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_bound_context_masked() -> None:
    logger, stream = _logger(json_formatter("bot-1", (TOKEN,)))
    with structlog.contextvars.bound_contextvars(update_id=7, user_id=42, error_ref=None):
        structlog.contextvars.bind_contextvars(request_id="call +998 90 123 45 67")
        logger.info("sent to %s with %s", "+7 912 345-67-89", TOKEN)
        try:
            raise ValueError(f"token {TOKEN}")
        except ValueError:
            logger.exception("failed")
    structlog.contextvars.unbind_contextvars("request_id")
    logger.info("after the work")
    first, failed, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "sent to ***89 with ***"
    assert (first["update_id"], first["user_id"], first["instance"]) == (7, 42, "bot-1")
    assert first["request_id"] == "call ***67"  # context values are masked too
    assert "error_ref" not in first  # bound to None: left out
    assert first["level"] == "info" and first["logger"].startswith("test.logs")
    assert failed["level"] == "error" and "ValueError" in failed["exception"]
    assert TOKEN not in failed["exception"]
    assert "update_id" not in after and after["instance"] == "bot-1"


def test_text_lines_append_the_context() -> None:
    logger, stream = _logger(TextFormatter((TOKEN,)))
    with structlog.contextvars.bound_contextvars(job="cleanup"):
        logger.info("done")
    logger.info("idle")
    done, idle = stream.getvalue().splitlines()
    assert done.endswith("INFO " + logger.name + ": done [job=cleanup]")
    assert idle.endswith(": idle")


def test_log_format_setting_picks_the_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(Settings(_env_file=None, log_format="json", instance_id="x",
                                   bot_token=SecretStr(TOKEN)))  # fmt: skip
        assert isinstance(root.handlers[0].formatter, structlog.stdlib.ProcessorFormatter)
        configure_logging(Settings(_env_file=None))
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
