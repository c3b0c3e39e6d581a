"""``lookalike`` command line. Each module in this package adds its commands to the shared app
(``lookalike.cli.app``); they are discovered here, so a feature adds a file, not an edit."""
from __future__ import annotations

import importlib
import pkgutil

from lookalike.cli.app import app


def _load_commands() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module != "app" and not module.startswith("_"):
            importlib.import_module(f"{__name__}.{module}")


_load_commands()


def main() -> None:
    app()
