"""aiogram middlewares: error handling (outermost), user loading and localization."""
