"""The process-wide caches, in one place with one way to clear them: loaded models, SAE layers, learned
offsets, the judge, the few-shot pool, the shipped evidence. Each is a ProcessCache: built once per key
under its own lock (two requests asking at once get one copy), forgotten by key or all together.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable
from typing import Any

_ALL: list[ProcessCache] = []


class ProcessCache:
    """A dict of values built once per key and shared by every thread of the process."""

    def __init__(self, name: str):
        self.name = name
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.RLock()
        _ALL.append(self)

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._values:
                self._values[key] = build()
            return self._values[key]

    def has(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def forget(self, key: Hashable | None = None, where: Callable[[Hashable], bool] | None = None) -> None:
        """Drop one key, or every key `where` accepts, or (neither given) everything."""
        with self._lock:
            if key is not None:
                self._values.pop(key, None)
            elif where is not None:
                for k in [k for k in self._values if where(k)]:
                    del self._values[k]
            else:
                self._values.clear()


_SERIALS = itertools.count()


def model_serial(model) -> int:
    """A number for this model object, never another's in this process (two models may share a name and an id()
    may be reused once an object is gone): what a cache of a model's outputs is keyed by."""
    serial = model.__dict__.get("_cache_serial")
    if serial is None:
        serial = model.__dict__["_cache_serial"] = next(_SERIALS)
    return serial


def clear_all() -> None:
    """Forget every cached value of the process (tests; after files changed on disk)."""
    for cache in _ALL:
        cache.forget()


def caches() -> dict[str, ProcessCache]:
    return {c.name: c for c in _ALL}


class BoundedCache(ProcessCache):
    """A ProcessCache that keeps at most `max_bytes` of values (`size_of` each), forgetting the least recently
    used first. A value larger than the whole budget is returned but not kept."""

    def __init__(self, name: str, max_bytes: int, size_of: Callable[[Any], int]):
        super().__init__(name)
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._sizes: dict[Hashable, int] = {}

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values[key] = self._values.pop(key)  # now the most recently used
                return self._values[key]
            value = build()
            self.put(key, value)
            return value

    def peek(self, key: Hashable) -> Any | None:
        """The value kept for `key` (now the most recently used), or None; builds nothing, so a caller can do its
        own slow work outside the lock and `put` the result."""
        with self._lock:
            if key not in self._values:
                return None
            self._values[key] = self._values.pop(key)
            return self._values[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Keep `value` for `key`, forgetting the least recently used values beyond the budget."""
        size = self._size_of(value)
        with self._lock:
            self._values.pop(key, None)
            self._sizes.pop(key, None)
            if size > self.max_bytes:
                return
            self._values[key], self._sizes[key] = value, size
            while sum(self._sizes.values()) > self.max_bytes:
                oldest = next(iter(self._values))
                del self._values[oldest], self._sizes[oldest]

    def bytes_held(self) -> int:
        with self._lock:
            return sum(self._sizes[k] for k in self._values)

    def forget(self, key: Hashable | None = None, where: Callable[[Hashable], bool] | None = None) -> None:
        with self._lock:
            super().forget(key, where)
            self._sizes = {k: s for k, s in self._sizes.items() if k in self._values}
