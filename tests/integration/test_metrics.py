"""Prometheus metrics scraped from real nodes (``[metrics] address``), after some traffic."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftctl import Client
from raftctl.localcluster import LocalCluster
from raftd.wire.client import parse_address
from tests.integration.helpers import (
    DEADLINE,
    diagnostic,
    leader_diagnostic,
    one_shot,
    wait_for_leader,
    wait_until,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> Samples:
    """Every sample of ``http://address/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=DEADLINE) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(3, tmp_path, fsync=True, metrics=True)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()


def scrape_in_role(
    cluster: LocalCluster, role: str, commit: int
) -> tuple[int, Samples, int]:
    """A node, its metrics and its term, scraped while its diagnostic names it ``role`` in one
    same term both before and after the scrape (leadership may move at any moment on a busy
    machine), once its metrics show ``commit`` committed and applied."""
    def probe() -> tuple[int, Samples, int] | None:
        for i, endpoint in enumerate(cluster.endpoints):
            before = diagnostic(endpoint)
            if before is None or before["status"] != role:
                continue
            samples = scrape(cluster.metrics_endpoints[i])
            after = diagnostic(endpoint)
            term = before["persist"]["currentTerm"]
            if (after is not None and after["status"] == role
                    and after["persist"]["currentTerm"] == term
                    and value(samples, "raft_commit_index") >= commit
                    and value(samples, "raft_applied_index") >= commit):
                return i, samples, term
        return None

    return wait_until(probe, f"a {role}'s metrics, scraped while it stays {role}")


def summed(cluster: LocalCluster, name: str, **labels: str) -> float:
    """A counter summed over every node: whichever nodes led, each request counts once."""
    key = (name, tuple(sorted(labels.items())))
    return sum(scrape(address).get(key, 0.0) for address in cluster.metrics_endpoints)


def test_scrape_leader_and_follower(metered: LocalCluster) -> None:
    wait_for_leader(metered)
    with Client(metered.endpoints, timeout=DEADLINE) as client:
        for i in range(20):
            client.set(f"m{i}", i)
        assert client.get("m3") == 3
        assert client.get("missing") is None

    def leader_commit() -> int | None:
        found = leader_diagnostic(metered)
        return None if found is None else found[1]["log"]["commitIndex"]

    commit = wait_until(leader_commit, "the leader's commit index")

    _, lead, term = scrape_in_role(metered, "leader", commit)
    assert value(lead, "raft_role", role="leader") == 1
    assert value(lead, "raft_role", role="follower") == 0
    assert value(lead, "raft_term") == term
    assert value(lead, "raft_last_log_index") >= commit
    assert value(lead, "raft_committed_entries_total") >= 1
    assert value(lead, "raft_append_entries_sent_total") > 0
    assert value(lead, "raft_fsync_seconds_count") > 0
    assert ("raft_snapshots_total", ()) in lead
    # Requests and proposals count on whichever node led (or answered) at the time.
    assert summed(metered, "raft_proposals_total") >= 1
    assert summed(metered, "raft_client_requests_total", type="write", result="ok") >= 20
    assert summed(metered, "raft_client_requests_total", type="read", result="ok") >= 2
    assert summed(metered, "raft_request_seconds_count", type="write") >= 20
    # Requests answered outside the log count too: diagnostics (as above), applications.
    assert summed(metered, "raft_client_requests_total", type="diagnostic", result="ok") >= 2
    (refused_app,) = one_shot(metered.endpoints[0], {"type": "fl_status"})
    assert refused_app["code"] == "bad_request", refused_app
    assert summed(metered, "raft_client_requests_total", type="fl", result="bad_request") == 1

    follower, other, _ = scrape_in_role(metered, "follower", commit)
    assert value(other, "raft_role", role="follower") == 1
    assert value(other, "raft_role", role="leader") == 0
    assert value(other, "raft_append_entries_received_total") > 0
    assert value(other, "raft_fsync_seconds_count") > 0

    # What the edge refuses is counted: a stray datagram on the peer port, a malformed request.
    endpoint = metered.endpoints[follower]
    dropped_before = dropped(other)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"\xc1 not a peer message", parse_address(endpoint))
    (answer,) = one_shot(endpoint, {"type": "get", "key": 7})
    assert answer["code"] == "bad_request"
    refused = wait_until(
        lambda: (s := scrape(metered.metrics_endpoints[follower]))
        and dropped(s) > dropped_before and s,
        "the stray datagram to be counted",
    )
    assert value(refused, "raft_client_rejected_total", reason="bad_request") == 1
    assert value(refused, "raft_snapshot_seconds_count") == 0  # no snapshot taken yet


def dropped(samples: Samples) -> float:
    """Datagrams dropped, whatever the reason."""
    return sum(v for (name, _), v in samples.items() if name == "raft_datagrams_dropped_total")
