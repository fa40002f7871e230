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
from tests.integration.helpers import (
    DEADLINE,
    diagnostic,
    one_shot,
    split_address,
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


def test_scrape_leader_and_follower(metered: LocalCluster) -> None:
    leader = wait_for_leader(metered)
    follower = (leader + 1) % 3
    with Client(metered.endpoints, timeout=DEADLINE) as client:
        for i in range(20):
            client.set(f"m{i}", i)
        assert client.get("m3") == 3
        assert client.get("missing") is None

    lead_diag = diagnostic(metered.endpoints[leader])
    assert lead_diag is not None
    commit = lead_diag["log"]["commitIndex"]
    lead = wait_until(
        lambda: (s := scrape(metered.metrics_endpoints[leader]))
        and value(s, "raft_commit_index") >= commit and s,
        "the leader's metrics to show its commit index",
    )
    assert value(lead, "raft_role", role="leader") == 1
    assert value(lead, "raft_role", role="follower") == 0
    assert value(lead, "raft_term") == lead_diag["persist"]["currentTerm"]
    assert value(lead, "raft_applied_index") >= commit
    assert value(lead, "raft_last_log_index") >= commit
    assert value(lead, "raft_proposals_total") >= 1
    assert value(lead, "raft_committed_entries_total") >= 1
    assert value(lead, "raft_append_entries_sent_total") > 0
    assert value(lead, "raft_client_requests_total", type="write", result="ok") >= 20
    assert value(lead, "raft_client_requests_total", type="read", result="ok") >= 2
    assert value(lead, "raft_fsync_seconds_count") > 0
    assert value(lead, "raft_request_seconds_count", type="write") >= 20
    assert ("raft_snapshots_total", ()) in lead

    other = wait_until(
        lambda: (s := scrape(metered.metrics_endpoints[follower]))
        and value(s, "raft_commit_index") >= commit and s,
        "a follower's metrics to catch up",
    )
    assert value(other, "raft_role", role="follower") == 1
    assert value(other, "raft_append_entries_received_total") > 0
    assert value(other, "raft_fsync_seconds_count") > 0

    # What the edge refuses is counted: a stray datagram on the peer port, a malformed request.
    endpoint = metered.endpoints[follower]
    dropped_before = dropped(other)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"\xc1 not a peer message", split_address(endpoint))
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
