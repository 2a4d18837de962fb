"""Put this directory first on PYTHONPATH to run Python as if the optional extras (embedded,
charts, sentry, redis) were not installed: importing or finding their modules fails as it
does when they are absent."""

import sys

BLOCKED = {"pgserver", "matplotlib", "sentry_sdk", "redis"}


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
