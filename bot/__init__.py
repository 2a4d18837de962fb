"""The Telegram bot: entry point (``python -m bot``), settings, app factory, scheduler."""
