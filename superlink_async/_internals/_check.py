"""What every fence's ``check`` uses: look up a private name, or fail in one clear line."""

from __future__ import annotations

import inspect
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, NoReturn


class IncompatibleLibraryError(RuntimeError):
    """An installed library lacks an internal name superlink-async relies on."""


class Fence:
    """The checks of one library's internals, each failing with the library's version."""

    def __init__(self, library: str, remedy: str = "") -> None:
        self.library = library
        #: What to do about a failure.
        self.remedy = remedy or (
            f"install a version of {library} within the range pyproject.toml gives"
        )

    @property
    def version(self) -> str:
        """The installed version (Python's for the standard library's modules)."""
        if self.library == "asyncio":
            return f"(Python {platform.python_version()})"
        try:
            return metadata.version(self.library)
        except metadata.PackageNotFoundError:
            return "(version unknown)"

    def fail(self, missing: str) -> NoReturn:
        """Raise the one-line error naming the library, its version and what is missing."""
        raise IncompatibleLibraryError(
            f"{self.library} {self.version} has no {missing}, which superlink-async relies on"
            f" (superlink_async/_internals); {self.remedy}"
        )

    @contextmanager
    def reaching(self) -> Iterator[None]:
        """Fail clearly where the library's own code, run inside, misses one of its names."""
        try:
            yield
        except AttributeError as exc:
            owner = getattr(exc, "obj", None)
            if owner is None or exc.name is None:
                self.fail(f"what this needed: {exc}")
            self.fail(f"{_name_of(owner)}.{exc.name}")

    def attribute(self, owner: Any, name: str) -> Any:
        """``owner.name``, which must exist."""
        try:
            return getattr(owner, name)
        except AttributeError:
            self.fail(f"{_name_of(owner)}.{name}")

    def function(self, owner: Any, name: str, parameters: tuple[str, ...]) -> Callable[..., Any]:
        """``owner.name``: a function taking exactly ``parameters`` (``self`` included)."""
        found = self.attribute(owner, name)
        if not inspect.isfunction(found):
            self.fail(f"function {_name_of(owner)}.{name} (it is a {type(found).__name__})")
        actual = tuple(inspect.signature(found).parameters)
        if actual != parameters:
            self.fail(
                f"{_name_of(owner)}.{name}({', '.join(parameters)}) (it takes"
                f" {', '.join(actual) or 'nothing'})"
            )
        return found

    def uses(self, owner: Any, function: str, *names: str) -> None:
        """``owner.function`` exists and its own code refers to each of ``names``.

        An attribute set in ``__init__`` cannot be looked up on the class; the names its
        code refers to (attributes and globals alike) can, without making an instance.
        """
        code = getattr(self.attribute(owner, function), "__code__", None)
        if code is None:
            self.fail(f"function {_name_of(owner)}.{function}")
        for name in names:
            if name not in code.co_names:
                self.fail(f"{name} in {_name_of(owner)}.{function}")


def _name_of(owner: Any) -> str:
    """A class's or function's qualified name, a module's name, an instance's class name."""
    if inspect.ismodule(owner):
        return owner.__name__
    if inspect.isclass(owner) or inspect.isroutine(owner):
        return str(owner.__qualname__)
    return type(owner).__qualname__
