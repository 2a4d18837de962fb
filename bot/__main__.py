"""``python -m bot`` runs the bot; ``python -m bot seed-demo`` loads demo data."""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings

from pydantic import ValidationError

from bot.settings import MissingSettingError, Settings
from database.migrate import SchemaNotAtHeadError

USAGE = "usage: python -m bot [run | seed-demo]"


def main(argv: list[str]) -> int:
    """Entry point; returns the process exit code. Configuration problems print one line."""
    # pgserver asks platformdirs for a runtime dir; containers often have no XDG_RUNTIME_DIR
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    command = argv[0] if argv else "run"
    if command not in ("run", "seed-demo"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        print(f"invalid settings: {problems}", file=sys.stderr)
        return 2
    from bot.features import MissingExtraError, check, describe
    from bot.lifecycle import run_bot
    from bot.logs import configure_logging
    from bot.seed_demo import seed_demo

    configure_logging(settings)
    try:
        if command == "run":
            settings.require_bot_token()
        check(settings)
        if command == "seed-demo":
            counts = asyncio.run(seed_demo(settings))
            print(f"demo data loaded: {counts}" if counts else "demo data already present")
            return 0
        logging.getLogger("bot").info("optional features: %s", describe(settings))
        asyncio.run(run_bot(settings))
    except (MissingSettingError, MissingExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SchemaNotAtHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        logging.getLogger("bot").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
