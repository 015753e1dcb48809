"""A dispatch table of bound methods, shared per class: what grpclib and h2 keep per connection."""

from __future__ import annotations

from typing import Any, ClassVar


class BoundOnLookup:
    """A dispatch table of one object's methods that binds them when looked up.

    grpclib and h2 each build a dict of a dozen bound methods per connection (about
    1.2 KB each); this shares one table of functions per class instead. It supports what
    their dispatch does with the table: look a key up (``KeyError`` for an unknown one).
    """

    __slots__ = ("_functions", "_owner")
    _tables: ClassVar[dict[tuple[type, str], dict[Any, Any]]] = {}

    def __init__(self, owner: Any, name: str, bound: dict[Any, Any]) -> None:
        key = (type(owner), name)
        if key not in self._tables:
            self._tables[key] = {kind: method.__func__ for kind, method in bound.items()}
        self._functions = self._tables[key]
        self._owner = owner

    def __getitem__(self, kind: Any) -> Any:
        return self._functions[kind].__get__(self._owner)
