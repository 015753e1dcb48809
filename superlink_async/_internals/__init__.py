"""The one fenced place per library where superlink-async reaches into private names.

Each module here is named after the library it reaches into, holds every use of that
library's private names, and has ``check()``, which fails with ``IncompatibleLibraryError``
(one line: library, installed version, missing name) unless the installed version has all
of them. ``check_all`` runs every module's check: the SuperLink calls it at start-up, before
it binds a port, so an incompatible upgrade is one clear error instead of an
``AttributeError`` on every connection (or a speed-up that silently does nothing).
"""

from __future__ import annotations

import importlib
import pkgutil

from superlink_async._internals._check import IncompatibleLibraryError

__all__ = ["IncompatibleLibraryError", "check_all", "fences"]


def fences() -> list[str]:
    """The fence modules' names: every module of this package not named ``_...``."""
    return sorted(
        f"{__name__}.{module.name}"
        for module in pkgutil.iter_modules(__path__)
        if not module.name.startswith("_")
    )


def check_all() -> None:
    """Run every fence's ``check``; the first failure raises ``IncompatibleLibraryError``.

    A check may raise any ``RuntimeError`` (``IncompatibleLibraryError`` is one); its
    message is kept.
    """
    for name in fences():
        try:
            importlib.import_module(name).check()
        except IncompatibleLibraryError:
            raise
        except RuntimeError as exc:
            raise IncompatibleLibraryError(str(exc)) from exc
