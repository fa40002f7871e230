"""Fixtures of the integration tests: real ``raftd`` processes on 127.0.0.1 (fsync on).

Every cluster lives in a temp dir and on ports from LocalCluster's allocator (TCP and UDP bound
together). Teardown, even after a failure, SIGCONTs every node (a SIGSTOPped one cannot act on
SIGTERM) and then stops them: SIGTERM, SIGKILL at the deadline, by PID, only processes the
fixture started. When a test fails, the tail of every node log of its clusters is attached to
the failure report.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftctl.localcluster import LocalCluster
from tests.integration.helpers import DEADLINE, wait_for_leader

LOG_TAIL_LINES = 150

_active: list[LocalCluster] = []
"""Clusters alive right now, whose logs a failure report shows."""

ClusterFactory = Callable[..., LocalCluster]


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for cluster in _active:
            for endpoint, path in zip(cluster.endpoints, cluster.log_paths, strict=True):
                report.sections.append((f"raftd log {endpoint} ({path})", _log_tail(path)))
    return report


def _shutdown(cluster: LocalCluster) -> None:
    for i in range(len(cluster)):
        cluster.kill(i, signal.SIGCONT)  # no-op unless running
    cluster.stop_all()


def _launch(base: Path, n: int, raft: dict[str, Any] | None,
            federated: dict[str, Any] | None = None, **kwargs: Any) -> LocalCluster:
    cluster = LocalCluster(n, base, fsync=True, extra_raft_config=raft, federated=federated,
                           **kwargs)
    _active.append(cluster)
    return cluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """``make_cluster(n)``: a LocalCluster of ``n`` nodes, not started yet; stopped at teardown.
    ``raft`` and ``federated`` add keys to every node's ``[raft]`` and ``[federated]``; any
    other keyword (``secret``, ``security``, ``access``, ``metrics``) goes to LocalCluster."""
    made: list[LocalCluster] = []

    def make(n: int, raft: dict[str, Any] | None = None,
             federated: dict[str, Any] | None = None, **kwargs: Any) -> LocalCluster:
        cluster = _launch(tmp_path / f"cluster{len(made) + 1}", n, raft, federated, **kwargs)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            try:
                _shutdown(cluster)
            finally:
                _active.remove(cluster)


@pytest.fixture
def make_secure(make_cluster: ClusterFactory) -> ClusterFactory:
    """``make_secure(n=3, *, start=True, **LocalCluster kwargs)`` (``secret``, ``access``,
    ``security``, ``extra_raft_config``...): a cluster of ``make_cluster`` (stopped, SIGCONT
    first, at teardown), started with a leader unless ``start`` is False. The leader is waited
    for through LocalCluster's own clients, which use ``access`` (a token, TLS)."""
    def make(n: int = 3, *, start: bool = True, **kwargs: Any) -> LocalCluster:
        cluster = make_cluster(n, raft=kwargs.pop("extra_raft_config", None), **kwargs)
        if start:
            cluster.start_all()
            cluster.wait_for_leader(DEADLINE)
        return cluster

    return make


@pytest.fixture
def cluster3(make_cluster: ClusterFactory) -> LocalCluster:
    """A started 3-node cluster with an elected leader."""
    cluster = make_cluster(3)
    cluster.start_all()
    wait_for_leader(cluster)
    return cluster


@pytest.fixture(scope="module")
def shared_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 3-node cluster for a whole module (tests that use it leave every node running)."""
    cluster = _launch(tmp_path_factory.mktemp("shared"), 3, None)
    try:
        cluster.start_all()
        yield cluster
    finally:
        try:
            _shutdown(cluster)
        finally:
            _active.remove(cluster)


@pytest.fixture
def cluster(shared_cluster3: LocalCluster) -> LocalCluster:
    """The module's shared cluster, every node running and a leader elected."""
    shared_cluster3.start_all()  # restarts any node an earlier failed test left down
    wait_for_leader(shared_cluster3)
    return shared_cluster3
