"""DistributedDict: the cluster as a ``MutableMapping``, with a per-key cache of bounded staleness.

Theory of operation:

- Writes (``d[k] = v``, ``del d[k]``, ``cas``, ``set_if_absent``) always go to the cluster and
  return once committed; each updates the cache, so a client reads its own writes.
- A read of one key (``d[k]``, ``k in d``, ``d.get(k)``) asks the cluster for that key only,
  a linearizable read, unless the refresh policy lets the cached copy answer. A fetch
  remembers when it was *sent*: the value it returns was current at some moment after that.
- Bounded staleness: a cached answer is at most as old as the policy allows: never
  (``RefreshPolicyAlways``), ``n - 1`` reads (``RefreshPolicyCount(n)``), ``delta`` of this
  process's monotonic clock (``RefreshPolicyTime(delta)``), or the moment the lock was released
  (``RefreshPolicyLock``). Another client's write becomes visible once the bound runs out.
- Read-modify-write is safe with ``modify`` (or ``cas`` by hand): it retries on a conflict,
  refetching, so no concurrent update is lost. ``d[k] += 1`` is *not* atomic.
- Iterating (``for k in d``, ``d.items()``, ``len(d)``) lists keys page by page; the pages
  also fill the cache. A listing is not a snapshot: keys written meanwhile may be missed.
- Keys are what the cluster holds: non-empty str of at most 4096 UTF-8 bytes. Any other key
  is missing, with no round trip (``KeyError``, ``k in d`` is False); writing one raises
  ``TypeError`` (not a str) or ``InvalidArgument``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    MutableMapping,
    ValuesView,
)
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from raftctl.blocking import Client
from raftctl.client import DEFAULT_TIMEOUT, Item, key_problem
from raftctl.errors import ConditionFailed, InvalidArgument

__all__ = [
    "DistributedDict",
    "RefreshPolicy",
    "RefreshPolicyAlways",
    "RefreshPolicyCount",
    "RefreshPolicyLock",
    "RefreshPolicyTime",
]

_PAGE = 1000
_MISSING: Any = object()


class RefreshPolicy(Protocol):
    """Decides whether a cached copy of a key may answer one more read."""

    def allows(self, reads: int, age: float) -> bool:
        """``reads``: reads this copy answered (its fetch counts as one); ``age``: seconds
        since its fetch was sent."""
        ...


class RefreshPolicyAlways:
    """Every read asks the cluster: linearizable, the default."""

    def allows(self, reads: int, age: float) -> bool:
        return False

    def __repr__(self) -> str:
        return "RefreshPolicyAlways()"


class RefreshPolicyLock:
    """While ``lock`` is True every read asks the cluster; set it False to read from the cache.

    With the lock released, a key read before is answered from the cache, as it was when
    last fetched (no older than the release, if it was read while locked); a key never read is
    fetched once. Set ``lock`` True again to resume linearizable reads.
    """

    def __init__(self, status: bool = True) -> None:
        self.lock = status

    def allows(self, reads: int, age: float) -> bool:
        return not self.lock

    def __repr__(self) -> str:
        return f"RefreshPolicyLock(status={self.lock})"


class RefreshPolicyCount:
    """Every ``maximum``-th read of a key asks the cluster; the reads between use the cache.

    A cached value is at most ``maximum - 1`` reads old (``RefreshPolicyCount(1)`` is Always).
    Counted per key: reading other keys does not age this one.
    """

    def __init__(self, maximum: int = 10) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum

    def allows(self, reads: int, age: float) -> bool:
        return reads < self.maximum

    def __repr__(self) -> str:
        return f"RefreshPolicyCount({self.maximum})"


class RefreshPolicyTime:
    """A cached value answers reads until it is ``delta`` old, then the cluster is asked again.

    Age runs from when the fetch was sent, on this process's monotonic clock.
    """

    def __init__(self, delta: timedelta = timedelta(minutes=1)) -> None:
        if delta < timedelta(0):
            raise ValueError("delta must not be negative")
        self.delta = delta

    def allows(self, reads: int, age: float) -> bool:
        return age < self.delta.total_seconds()

    def __repr__(self) -> str:
        return f"RefreshPolicyTime({self.delta!r})"


@dataclass(slots=True)
class _Cached:
    item: Item | None  # None: the key did not exist
    sent_at: float
    reads: int = 1


class DistributedDict(MutableMapping[str, Any]):
    """A ``MutableMapping`` over a rafty cluster; see the module docstring for its guarantees.

    ``d["missing"]`` raises ``KeyError``; cluster failures raise ``raftctl`` errors
    (``ClusterUnavailable``, ``RequestTimeout``...). Safe to share between threads.
    """

    def __init__(
        self,
        endpoints: str | Iterable[str],
        *,
        refresh_policy: RefreshPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        **access: Any,
    ) -> None:
        """``access``: ``token``, ``tls``, ``cacert``, ``cert``, ``key``, as ``Client``'s."""
        self.refresh_policy: RefreshPolicy = refresh_policy or RefreshPolicyAlways()
        self.client = Client(endpoints, timeout, **access)
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    # -- MutableMapping --------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        item = self._read(key)
        if item is None:
            raise KeyError(key)
        return item.value

    def __setitem__(self, key: str, value: Any) -> None:
        self._write(key, value, lambda: self.client.set(key, value))

    def __delitem__(self, key: str) -> None:
        if not _holdable(key):
            raise KeyError(key)
        sent_at = self._clock()
        try:
            found = self.client.delete(key)
        except BaseException:
            self.invalidate(key)
            raise
        self._store(key, None, sent_at)
        if not found:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        for item in self._scan(""):
            yield item.key

    def __len__(self) -> int:
        """Counts the keys by listing them all: O(number of keys) on the wire."""
        return sum(1 for _ in self)

    def items(self) -> ItemsView[str, Any]:
        """Iterated page by page: the values come with the keys, never one read per key."""
        return _PagedItems(self)

    def values(self) -> ValuesView[Any]:
        """Iterated page by page, as ``items()``."""
        return _PagedValues(self)

    def __repr__(self) -> str:
        return (
            f"DistributedDict({self.client.endpoints!r}, refresh_policy={self.refresh_policy!r})"
        )

    def prefix_items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` of every key starting with ``prefix``, in key order, fetched page
        by page (each page a linearizable read; the pages together are not one snapshot).
        The values land in the cache, as iteration's do."""
        for item in self._scan(prefix):
            yield item.key, item.value

    # -- revisions and compare-and-set -----------------------------------------------------------

    def revision(self, key: str) -> int:
        """``key``'s revision (under the refresh policy); ``KeyError`` if it does not exist."""
        item = self._read(key)
        if item is None:
            raise KeyError(key)
        return item.revision

    def cas(self, key: str, expected_revision: int, value: Any) -> int:
        """Write only if ``key`` is still at ``expected_revision``; returns the new revision.

        Raises ``ConditionFailed`` otherwise.
        """
        return self._write(key, value, lambda: self.client.cas(key, expected_revision, value))

    def set_if_absent(self, key: str, value: Any) -> int:
        """Write only if ``key`` does not exist; ``ConditionFailed`` otherwise."""
        return self._write(key, value, lambda: self.client.set_if_absent(key, value))

    def modify(self, key: str, fn: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """Atomically replace ``key``'s value by ``fn(value)`` and return the new value.

        ``fn`` may run several times: on a conflict the key is fetched again and ``fn``
        reapplied. A missing key uses ``default`` (``KeyError`` without one), and is created
        only if still absent.
        """
        item = self._read(key)
        while True:
            if item is None and default is _MISSING:
                raise KeyError(key)
            value = fn(default if item is None else item.value)
            try:
                if item is None:
                    self.set_if_absent(key, value)
                else:
                    self.cas(key, item.revision, value)
            except ConditionFailed:
                item = self._fetch(key)
                continue
            return value

    # -- cache -----------------------------------------------------------------------------------

    def invalidate(self, key: str | None = None) -> None:
        """Forget the cached copy of ``key`` (None: of every key); the next read fetches."""
        with self._lock:
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(key, None)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self, key: str) -> Item | None:
        if not _holdable(key):
            return None  # missing, as the cluster cannot hold it: no round trip
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self.refresh_policy.allows(
                cached.reads, self._clock() - cached.sent_at
            ):
                cached.reads += 1
                return cached.item
        return self._fetch(key)

    def _scan(self, prefix: str) -> Iterator[Item]:
        after: str | None = None
        while True:
            sent_at = self._clock()
            page = self.client.scan(prefix, after=after, limit=_PAGE)
            for item in page.items:
                self._store(item.key, item, sent_at)
                yield item
            if not page.more or not page.items:
                return
            after = page.items[-1].key

    def _fetch(self, key: str) -> Item | None:
        sent_at = self._clock()
        item = self.client.get_item(key)
        self._store(key, item, sent_at)
        return item

    def _write(self, key: str, value: Any, send: Callable[[], int]) -> int:
        if not isinstance(key, str):
            raise TypeError(f"DistributedDict keys are str, not {type(key).__name__}")
        problem = key_problem(key)
        if problem is not None:
            raise InvalidArgument(problem)
        sent_at = self._clock()
        try:
            revision = send()
        except BaseException:
            self.invalidate(key)  # a failed write may or may not have been applied
            raise
        self._store(key, Item(key, value, revision), sent_at)
        return revision

    def _store(self, key: str, item: Item | None, sent_at: float) -> None:
        with self._lock:
            cached = self._cache.get(key)
            # Answers may arrive out of order between threads: keep the most recent fetch.
            if cached is None or cached.sent_at <= sent_at:
                self._cache[key] = _Cached(item, sent_at)


class _PagedItems(ItemsView[str, Any]):
    _mapping: DistributedDict

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._mapping.prefix_items("")


class _PagedValues(ValuesView[Any]):
    _mapping: DistributedDict

    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self._mapping.prefix_items(""))

    def __contains__(self, value: object) -> bool:
        return any(v is value or v == value for v in self)  # ValuesView's reads each key


def _holdable(key: object) -> bool:
    """Whether the cluster can hold ``key``: a Mapping finds nothing under any other key."""
    return isinstance(key, str) and key_problem(key) is None
