"""Peers named by host name, on real processes: names are looked up off the event loop, and a
name that does not resolve (yet: a container or pod not started) neither stops a node from
starting nor crashes it; it is logged once and what is sent to it is counted as dropped."""

from __future__ import annotations

from raftctl import Client
from raftctl.localcluster import LocalCluster
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import DEADLINE, wait_diagnostic, wait_for_leader, wait_until


def rename(cluster: LocalCluster, renames: dict[str, str]) -> None:
    """Call nodes by other names in every config (their address and every members list)."""
    for path in cluster.config_paths:
        text = path.read_text()
        for old, new in renames.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        path.write_text(text)


def test_a_cluster_of_named_peers_elects_and_replicates(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    named = [endpoint.replace("127.0.0.1:", "localhost:") for endpoint in cluster.endpoints]
    rename(cluster, dict(zip(cluster.endpoints, named, strict=True)))
    cluster.endpoints = named  # the helpers compare leader ids with these
    cluster.start_all()
    wait_for_leader(cluster)
    with Client(named, timeout=DEADLINE) as client:
        client.set("greeting", "hello")
        for endpoint in named:  # each member applied it: linearizable reads of every node
            with Client([endpoint], timeout=DEADLINE) as one:
                assert one.get("greeting") == "hello"


def test_a_node_starts_and_runs_while_a_peers_name_does_not_resolve(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    missing = "peer3.invalid:" + cluster.endpoints[2].rpartition(":")[2]
    rename(cluster, {cluster.endpoints[2]: missing})
    for i in (0, 1):
        cluster.start(i)

    def unresolved_drops() -> list[int] | None:
        counts = [wait_diagnostic(endpoint)["droppedDatagrams"]["unresolved"]
                  for endpoint in cluster.endpoints[:2]]
        return counts if all(n > 0 for n in counts) else None

    first = wait_until(unresolved_drops, "datagrams to the unresolvable peer to be dropped")
    wait_until(lambda: all(n > f + 3 for n, f in zip(unresolved_drops() or first, first,
                                                     strict=True)) or None,
               "more of them, as the lookup keeps failing")
    assert cluster.is_running(0) and cluster.is_running(1)
    cluster.stop_all()
    for log in cluster.log_paths[:2]:
        lines = [line for line in log.read_text().splitlines()
                 if f"peer {missing} does not resolve" in line]
        assert len(lines) == 1, lines  # retried every second, logged once
        assert "WARNING" in lines[0] and "datagrams to it are dropped" in lines[0]
