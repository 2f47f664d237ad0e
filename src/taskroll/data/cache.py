"""A small thread-safe LRU map for the in-process data caches (panels, features).

It lives below both :mod:`taskroll.data.loader` and :mod:`taskroll.data.features`
so that neither imports the other for it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class LRUCache:
    """A bounded, thread-safe least-recently-used map.

    Args:
        capacity: How many values are kept; the least recently used goes first.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """Return the cached value for ``key``, building (and caching) it when absent."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every cached value."""
        with self._lock:
            self._items.clear()


PANEL_CACHE = LRUCache(capacity=4)
"""Loaded or generated bar panels, keyed by the loader's ``cache_key``."""

FEATURE_CACHE = LRUCache(capacity=2)
"""Computed feature frames (~130 MB each for 150 instruments x 6 years)."""


def clear_caches() -> None:
    """Drop every in-process data cache (panels, generated markets, computed features)."""
    PANEL_CACHE.clear()
    FEATURE_CACHE.clear()
