"""One generic registry behind every family (key strategies, regularizers, backends, attacks, ...).

Each implementation registers itself with ``@REGISTRY.register("name")`` in its own file; the family's
``__init__`` imports its modules so that importing the family fills the registry. There is no second
table of names anywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from omlkit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from string to implementation, with duplicate checks and "did you mean" errors."""

    def __init__(self, family: str, base: type | None = None) -> None:
        self.family = family
        self.base = base
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; refuses duplicates and non-subclasses of ``base``."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} is already registered ({self._items[name]!r})")
            if self.base is not None and isinstance(obj, type) and not issubclass(obj, self.base):
                raise TypeError(f"{self.family} {name!r}: {obj!r} is not a subclass of {self.base.__name__}")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the implementation registered as ``name``; raises ConfigError naming close matches."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.family} {name!r}{hint} (registered: {known})") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, implementation) pairs in name order."""
        for name in self.names():
            yield name, self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


#: Every family registry by family name, so ``oml list FAMILY`` can find them.
FAMILIES: dict[str, Registry] = {}


def family(name: str, base: type | None = None) -> Registry:
    """Create (once) and return the registry of a family, recorded in ``FAMILIES``."""
    if name not in FAMILIES:
        FAMILIES[name] = Registry(name, base)
    return FAMILIES[name]
