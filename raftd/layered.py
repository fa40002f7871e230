"""LayeredDict: a dict whose contents can be frozen in O(1) for a snapshot while writes go on.

Why: copying a 1,000,000-key dict is one C call holding the GIL for ~90 ms, far longer than a
heartbeat interval, so a snapshot must not copy. ``freeze()`` instead hands out the current
dict itself and starts a fresh *overlay* for later writes (deletions become tombstones). The
frozen dict is never written again until its reader calls ``release`` (from any thread: it
only sets a flag); the next access on the owning thread then folds the overlay back in, which
costs only the writes made meanwhile. Only the owner thread calls anything but ``release``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

_TOMBSTONE: Any = object()
_MISSING: Any = object()


class LayeredDict:
    def __init__(self, items: dict[str, Any] | None = None) -> None:
        self._live: dict[str, Any] = items if items is not None else {}
        self._frozen: dict[str, Any] | None = None
        self._released = False
        self._count = len(self._live)

    def settle(self) -> None:
        """Fold the overlay back into the frozen dict once its reader released it."""
        if self._frozen is None or not self._released:
            return
        base, overlay = self._frozen, self._live
        for key, item in overlay.items():
            if item is _TOMBSTONE:
                base.pop(key, None)
            else:
                base[key] = item
        self._live, self._frozen = base, None

    def get(self, key: str) -> Any:
        if self._frozen is None:
            return self._live.get(key)
        item = self._live.get(key, _MISSING)
        if item is _MISSING:
            return self._frozen.get(key)
        return None if item is _TOMBSTONE else item

    def set(self, key: str, item: Any, *, existed: bool | None = None) -> None:
        """``existed``: whether ``key`` is present, when the caller just looked it up (the
        state machine always has: this spares a second lookup per write)."""
        if existed is None:
            existed = self.get(key) is not None
        if not existed:
            self._count += 1
        self._live[key] = item

    def delete(self, key: str) -> None:
        if self.get(key) is None:
            return
        self._count -= 1
        if self._frozen is None:
            del self._live[key]
        else:
            self._live[key] = _TOMBSTONE

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[str, Any]]:
        if self._frozen is None:
            yield from self._live.items()
            return
        live = self._live
        for key, item in self._frozen.items():
            if key not in live:
                yield key, item
        for key, item in live.items():
            if item is not _TOMBSTONE:
                yield key, item

    def as_dict(self) -> dict[str, Any]:
        """The whole mapping as a plain dict (no copy once settled)."""
        self.settle()
        return self._live if self._frozen is None else dict(self.items())

    def freeze(self) -> tuple[dict[str, Any], Callable[[], None]]:
        """The current contents, read-only until the returned ``release`` is called."""
        self.settle()
        if self._frozen is not None:
            return dict(self.items()), _noop  # one freeze at a time: a second one copies
        self._frozen, self._live, self._released = self._live, {}, False

        def release() -> None:
            self._released = True

        return self._frozen, release


def _noop() -> None:
    pass
