"""The process-wide caches, in one place with one way to clear them: loaded models, SAE layers, learned
offsets, the judge, the few-shot pool, the shipped evidence. Each is a ProcessCache: built once per key
under its own lock (two requests asking at once get one copy), forgotten by key or all together.
"""

from __future__ import annotations

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


def clear_all() -> None:
    """Forget every cached value of the process (tests; after files changed on disk)."""
    for cache in _ALL:
        cache.forget()


def caches() -> dict[str, ProcessCache]:
    return {c.name: c for c in _ALL}
