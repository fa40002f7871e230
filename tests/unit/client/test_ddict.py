"""DistributedDict semantics with a scripted client and a hand-driven clock.

What each refresh policy lets the cache answer, read-your-writes, and that a read of one key
asks for that key only. tests/integration/test_ddict.py runs the same ideas on real nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from raftctl import (
    ConditionFailed,
    DistributedDict,
    Item,
    Page,
    RefreshPolicy,
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
    RequestTimeout,
)


class Cluster:
    """The Client methods DistributedDict uses, over a dict; ``asked`` logs every call."""

    def __init__(self) -> None:
        self.data: dict[str, Item] = {}
        self.revision = 0
        self.asked: list[str] = []
        self.endpoints = ["127.0.0.1:7001"]
        self.fail_next = False

    def other_client_writes(self, key: str, value: Any) -> None:
        self.revision += 1
        self.data[key] = Item(key, value, self.revision)

    def get_item(self, key: str) -> Item | None:
        self.asked.append(f"get {key}")
        return self.data.get(key)

    def _write(self, key: str, value: Any, expected: int | None) -> int:
        if self.fail_next:
            self.fail_next = False
            raise RequestTimeout("no answer")
        current = self.data.get(key)
        if expected is not None and expected != (current.revision if current else 0):
            raise ConditionFailed("condition_failed", f"key {key!r} changed")
        self.other_client_writes(key, value)
        return self.revision

    def set(self, key: str, value: Any) -> int:
        self.asked.append(f"set {key}")
        return self._write(key, value, None)

    def cas(self, key: str, expected_revision: int, value: Any) -> int:
        self.asked.append(f"cas {key}")
        return self._write(key, value, expected_revision)

    def set_if_absent(self, key: str, value: Any) -> int:
        self.asked.append(f"set_if_absent {key}")
        return self._write(key, value, 0)

    def delete(self, key: str) -> bool:
        self.asked.append(f"delete {key}")
        return self.data.pop(key, None) is not None

    def scan(self, prefix: str, *, after: str | None, limit: int) -> Page:
        self.asked.append(f"scan after {after}")
        keys = sorted(k for k in self.data
                      if k.startswith(prefix) and (after is None or k > after))
        return Page([self.data[k] for k in keys[:limit]], len(keys) > limit)

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(cluster: Cluster, clock: Clock) -> Iterator[Any]:
    made: list[DistributedDict] = []

    def make(policy: RefreshPolicy | None = None) -> DistributedDict:
        d = DistributedDict("127.0.0.1:1", refresh_policy=policy, clock=clock)
        d.client.close()  # replaced by the scripted cluster
        d.client = cluster  # type: ignore[assignment]
        made.append(d)
        return d

    yield make


def reads(cluster: Cluster) -> int:
    return sum(1 for call in cluster.asked if call.startswith("get"))


def test_always_reads_every_time_and_sees_other_writers(make: Any, cluster: Cluster) -> None:
    d = make()
    cluster.other_client_writes("k", 1)
    assert d["k"] == 1
    cluster.other_client_writes("k", 2)
    assert d["k"] == 2 and d.get("k") == 2 and "k" in d
    assert reads(cluster) == 4
    assert d.get("missing") is None and "missing" not in d
    with pytest.raises(KeyError):
        d["missing"]


def test_a_read_of_one_key_asks_for_that_key_only(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(2))
    for i in range(100):
        cluster.other_client_writes(f"k{i}", i)
    assert d["k7"] == 7 and d.revision("k7") == 8 and "k8" in d
    assert cluster.asked == ["get k7", "get k8"]


def test_count_serves_n_minus_1_cached_reads_per_key(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(3))
    cluster.other_client_writes("k", "old")
    cluster.other_client_writes("other", 0)
    assert d["k"] == "old"  # fetch 1
    cluster.other_client_writes("k", "new")
    assert [d["other"] for _ in range(5)] == [0] * 5  # other keys do not age k
    assert (d["k"], d["k"]) == ("old", "old")  # reads 2 and 3: from the cache
    assert d["k"] == "new"  # read 4 fetches again
    assert cluster.asked.count("get k") == 2


def test_count_of_one_is_always(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(1))
    cluster.other_client_writes("k", 1)
    d["k"], d["k"], d["k"]
    assert reads(cluster) == 3
    with pytest.raises(ValueError):
        RefreshPolicyCount(0)


def test_time_serves_the_cache_until_delta(make: Any, cluster: Cluster, clock: Clock) -> None:
    d = make(RefreshPolicyTime(timedelta(seconds=2)))
    cluster.other_client_writes("k", "old")
    assert d["k"] == "old"
    cluster.other_client_writes("k", "new")
    clock.now += 1.9
    assert d["k"] == "old"
    clock.now += 0.1
    assert d["k"] == "new"
    assert reads(cluster) == 2


def test_time_has_a_working_default() -> None:
    # The seed's version called its timedelta and crashed.
    assert RefreshPolicyTime().delta == timedelta(minutes=1)
    with pytest.raises(ValueError):
        RefreshPolicyTime(timedelta(seconds=-1))


def test_lock_freezes_reads_while_released(make: Any, cluster: Cluster) -> None:
    policy = RefreshPolicyLock()
    d = make(policy)
    cluster.other_client_writes("k", 1)
    assert d["k"] == 1
    cluster.other_client_writes("k", 2)
    assert d["k"] == 2  # locked: every read fetches
    policy.lock = False
    cluster.other_client_writes("k", 3)
    cluster.other_client_writes("fresh", "x")
    assert (d["k"], d["fresh"], d["fresh"]) == (2, "x", "x")  # a key never read: fetched once
    assert reads(cluster) == 3
    policy.lock = True
    assert d["k"] == 3


def test_own_writes_are_read_back_from_the_cache(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(10))
    d["k"] = "mine"
    assert d["k"] == "mine" and d.revision("k") == 1
    del d["k"]
    assert "k" not in d
    assert reads(cluster) == 0
    with pytest.raises(KeyError):
        del d["k"]


def test_a_failed_write_forgets_the_cached_copy(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(10))
    d["k"] = 1
    cluster.fail_next = True
    with pytest.raises(RequestTimeout):
        d["k"] = 2  # may or may not have been applied
    assert d["k"] == 1 and reads(cluster) == 1


def test_modify_retries_on_conflict(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(100))
    d["n"] = 1
    cluster.other_client_writes("n", 10)  # the cached revision is now stale
    calls: list[int] = []

    def bump(n: int) -> int:
        calls.append(n)
        return n + 1

    assert d.modify("n", bump) == 11
    assert calls == [1, 10] and cluster.data["n"].value == 11
    assert d.modify("new", bump, default=0) == 1
    with pytest.raises(KeyError):
        d.modify("absent", bump)


def test_cas_and_set_if_absent(make: Any, cluster: Cluster) -> None:
    d = make()
    revision = d.set_if_absent("k", "a")
    with pytest.raises(ConditionFailed):
        d.set_if_absent("k", "b")
    assert d.cas("k", revision, "c") > revision
    with pytest.raises(ConditionFailed):
        d.cas("k", revision, "d")
    assert d["k"] == "c"


def test_iteration_pages_and_fills_the_cache(make: Any, cluster: Cluster) -> None:
    d = make(RefreshPolicyCount(5))
    for i in range(2500):
        cluster.other_client_writes(f"k{i:04}", i)
    assert len(d) == 2500
    assert cluster.asked.count("scan after None") == 1 and len(cluster.asked) == 3
    assert dict(d.items())["k1234"] == 1234
    assert reads(cluster) == 0
    assert list(d.prefix_items("k249")) == [(f"k249{i}", 2490 + i) for i in range(10)]
    assert isinstance(d.refresh_policy, RefreshPolicyCount)
    assert "RefreshPolicyCount(5)" in repr(d)


def test_items_and_values_come_with_the_pages_even_when_every_read_asks(
    make: Any, cluster: Cluster
) -> None:
    d = make(RefreshPolicyAlways())
    for i in range(1500):
        cluster.other_client_writes(f"k{i:04}", i)
    assert dict(d.items()) == {f"k{i:04}": i for i in range(1500)}
    assert sum(d.values()) == sum(range(1500))
    assert ("k0007", 7) in d.items() and ("k0007", 8) not in d.items()
    assert 1499 in d.values() and -1 not in d.values()
    assert len(d.items()) == len(d.values()) == 1500
    # Two pages per listing, no read per key but the items membership tests' own two.
    assert cluster.asked.count("scan after None") == 6 and reads(cluster) == 2


def test_default_policy_is_always(make: Any) -> None:
    assert isinstance(make().refresh_policy, RefreshPolicyAlways)
