"""A bounded memo for the harvest's hot paths: ``memo[key]`` computes a value once and keeps it.

When ``size`` keys are held the memo is emptied, a bound that costs nothing on a hit (a plain
dict lookup, usable with ``map(memo.__getitem__, ...)``), unlike an LRU's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """key -> ``compute(key)``, kept until ``size`` keys are held, then emptied."""

    def __init__(self, compute: Callable[[K], V], size: int) -> None:
        super().__init__()
        self.compute, self.size = compute, size

    def __missing__(self, key: K) -> V:
        if len(self) >= self.size:
            self.clear()
        value = self[key] = self.compute(key)
        return value
