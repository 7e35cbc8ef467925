"""What is built from an answer, reused while that very answer comes back (calls that shared it share this too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K")

# Answers whose built result is kept: one per account calling at once is the point; the bound caps the memory that
# answers no longer in use hold (with the cache off every upstream answer is a new object) at a few hundred KB.
DEFAULT_MAX_BUILT: Final = 256


class BuiltFrom(Generic[K, T]):
    """`build(key)`, reused while that very object comes back (identity, not equality), for the most recent keys.

    Calls that shared one answer (one upstream request, or one kept answer) get the same object, so they share
    what is built from it; with many accounts calling at once, each account's current answer keeps its own entry.
    Equal answers of two accounts are distinct objects, so nothing built ever crosses accounts.
    """

    def __init__(self, build: Callable[[K], T], *, max_entries: int = DEFAULT_MAX_BUILT) -> None:
        self._build = build
        self._max_entries = max_entries
        # By id(key); each entry holds its key, so that id cannot be reused by another object while it is here.
        self._built: dict[int, tuple[K, T]] = {}

    def __len__(self) -> int:
        return len(self._built)

    def __call__(self, key: K) -> T:
        entry = self._built.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self._build(key)
        if len(self._built) >= self._max_entries:
            del self._built[next(iter(self._built))]  # dicts keep insertion order: the oldest goes
        self._built[id(key)] = (key, value)
        return value
