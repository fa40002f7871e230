"""The Python API on real nodes: DistributedDict refresh policies, concurrent compare-and-set
increments that lose no update, and the README's example run as it is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from raftctl import (
    AsyncClient,
    Client,
    ConditionFailed,
    DistributedDict,
    RefreshPolicy,
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
)
from raftctl.errors import InvalidArgument
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import DEADLINE, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
WORKERS = 4
INCREMENTS = 25


@pytest.fixture
def dicts(cluster: LocalCluster) -> Iterator[Callable[..., DistributedDict]]:
    """``make(policy)``: a DistributedDict on the cluster, closed after the test."""
    made: list[DistributedDict] = []

    def make(policy: RefreshPolicy | None = None) -> DistributedDict:
        d = DistributedDict(cluster.endpoints, refresh_policy=policy, timeout=DEADLINE)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def test_always_sees_every_write_of_another_client(dicts: Callable[..., DistributedDict]) -> None:
    writer, reader = dicts(), dicts(RefreshPolicyAlways())
    for i in range(5):
        writer["always"] = i
        assert reader["always"] == i
    del writer["always"]
    assert "always" not in reader
    with pytest.raises(KeyError):
        reader["always"]


def test_count_serves_cached_reads_then_refreshes(dicts: Callable[..., DistributedDict]) -> None:
    writer, reader = dicts(), dicts(RefreshPolicyCount(3))
    writer["count"] = "old"
    assert reader["count"] == "old"
    writer["count"] = "new"
    assert [reader["count"], reader["count"], reader["count"]] == ["old", "old", "new"]


def test_time_bounds_staleness_by_delta(dicts: Callable[..., DistributedDict]) -> None:
    writer = dicts()
    patient = dicts(RefreshPolicyTime(timedelta(hours=1)))
    eager = dicts(RefreshPolicyTime(timedelta(milliseconds=50)))
    writer["time"] = "old"
    assert patient["time"] == "old" and eager["time"] == "old"
    writer["time"] = "new"
    assert patient["time"] == "old"  # within the hour: the cache answers
    wait_until(lambda: eager["time"] == "new", "the 50 ms cache to expire")
    patient.invalidate("time")
    assert patient["time"] == "new"


def test_lock_freezes_reads_while_released(dicts: Callable[..., DistributedDict]) -> None:
    policy = RefreshPolicyLock()
    writer, reader = dicts(), dicts(policy)
    writer["lock"] = 1
    assert reader["lock"] == 1
    writer["lock"] = 2
    assert reader["lock"] == 2  # locked: linearizable
    policy.lock = False
    writer["lock"] = 3
    assert reader["lock"] == 2
    policy.lock = True
    assert reader["lock"] == 3


def test_own_writes_and_mapping_methods(dicts: Callable[..., DistributedDict]) -> None:
    d = dicts(RefreshPolicyCount(5))
    d.update({"map/a": 1, "map/b": [1, 2], "map/c": {"x": b"\x00\xff"}})
    assert d["map/c"] == {"x": b"\x00\xff"} and d.get("map/none", 0) == 0
    assert d.pop("map/a") == 1 and "map/a" not in d
    assert d.setdefault("map/d", "set") == "set" and d.setdefault("map/d", "other") == "set"
    keys = [k for k in d if k.startswith("map/")]
    assert keys == ["map/b", "map/c", "map/d"] and len(d) >= 3
    assert list(d.prefix_items("map/c")) == [("map/c", {"x": b"\x00\xff"})]
    assert d.revision("map/b") > 0


def test_keys_the_cluster_cannot_hold_behave_as_missing(
    dicts: Callable[..., DistributedDict],
) -> None:
    """A Mapping answers False for a key it cannot hold; writing one is the caller's error,
    not the node's bad_request."""
    d = dicts()
    d["holdable"] = 1
    assert 5 not in d and "" not in d and "holdable" in d
    assert d.get(5) is None and d.pop("", "gone") == "gone"
    with pytest.raises(KeyError):
        d[5]
    with pytest.raises(TypeError, match="keys are str, not int"):
        d[5] = 1  # type: ignore[index]
    with pytest.raises(InvalidArgument, match="a key must not be empty"):
        d[""] = 1
    assert dict(d.prefix_items("holdable")) == {"holdable": 1}


def test_a_read_of_one_key_never_fetches_the_whole_state(
    dicts: Callable[..., DistributedDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, Any]] = []
    real = AsyncClient._request

    async def spy(self: AsyncClient, body: dict[str, Any], **kwargs: Any) -> Any:
        asked.append(body)
        return await real(self, body, **kwargs)

    monkeypatch.setattr(AsyncClient, "_request", spy)
    d = dicts()
    d["whole/k"] = 1
    assert d["whole/k"] == 1 and "whole/k" in d and d.get("whole/missing") is None
    gets = [body for body in asked if body["type"] == "get"]
    assert len(gets) == 3 and all(body.get("key") for body in gets)


def _increment_with_cas(endpoints: list[str], key: str) -> int:
    """INCREMENTS increments through one client's cas loop; returns the conflicts seen."""
    conflicts = 0
    with Client(endpoints, timeout=DEADLINE) as client:
        for _ in range(INCREMENTS):
            while True:
                item = client.get_item(key)
                assert item is not None
                try:
                    client.cas(key, item.revision, item.value + 1)
                    break
                except ConditionFailed:
                    conflicts += 1
    return conflicts


def test_concurrent_cas_increments_lose_no_update(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("counter", 0)
    conflicts: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            conflicts.append(_increment_with_cas(cluster.endpoints, "counter"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE * 2)
    assert not errors, errors
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.get("counter") == WORKERS * INCREMENTS
    assert len(conflicts) == WORKERS  # every worker finished (conflicts are likely, not needed)


def test_concurrent_modify_from_processes_loses_no_update(cluster: LocalCluster) -> None:
    """DistributedDict.modify from separate processes, each with its own cached copy."""
    script = (
        "import sys\n"
        "from raftctl import DistributedDict, RefreshPolicyCount\n"
        "d = DistributedDict(sys.argv[1].split(','), refresh_policy=RefreshPolicyCount(50),"
        " timeout=30)\n"
        f"for _ in range({INCREMENTS}):\n"
        "    d.modify('procs', lambda n: n + 1, default=0)\n"
        "d.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, ",".join(cluster.endpoints)])
        for _ in range(WORKERS)
    ]
    try:
        assert [p.wait(DEADLINE * 2) for p in procs] == [0] * WORKERS
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.get("procs") == WORKERS * INCREMENTS


def test_the_readme_example_runs(cluster: LocalCluster) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README.md lacks the Python API example"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    env["RAFTCTL_ENDPOINTS"] = ",".join(cluster.endpoints)
    done = subprocess.run(
        [sys.executable, "-c", match.group(1)], env=env, capture_output=True, text=True, check=False,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    assert "it is now at revision" in done.stdout
