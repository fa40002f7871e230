"""InstallSnapshot: a follower behind the leader's compacted log catches up from a snapshot."""

from __future__ import annotations

from raftd.core import ConfState, Snapshot, SnapshotMeta
from raftd.core.messages import MsgSnap
from raftd.core.progress import ProgressState
from tests.unit.core.harness import Network


def compact_leader(net: Network, id: str) -> SnapshotMeta:
    node = net[id]
    index = node.raft.log.applied_index
    meta = SnapshotMeta(index=index, term=node.raft.log.term(index),
                        conf_state=ConfState(voters=node.raft.voters))
    node.storage.create_snapshot(Snapshot(meta=meta, data=b"state@%d" % index))
    node.storage.compact(index)
    return meta


def n3_behind_a_snapshot(entries: int) -> tuple[Network, SnapshotMeta]:
    """n1 leads and commits ``entries`` entries while n3 is cut off, then compacts them
    away; the network is still partitioned."""
    net = Network(3)
    net.campaign("n1")
    net.isolate("n3")
    for i in range(entries):
        net.propose("n1", b"v%d" % i)
    return net, compact_leader(net, "n1")


def test_lagging_follower_catches_up_by_snapshot_then_entries() -> None:
    net, meta = n3_behind_a_snapshot(20)
    net.propose("n1", b"after-snapshot")
    net.heal()
    net.tick("n1", 4)
    n3 = net["n3"]
    assert [s.meta for s in n3.installed] == [meta]
    assert n3.installed[0].data == b"state@%d" % meta.index
    last = net["n1"].storage.last_index()
    assert n3.storage.last_index() == last
    assert n3.storage.entries(meta.index + 1, last + 1) == \
        net["n1"].storage.entries(meta.index + 1, last + 1)
    assert [e.data for e in n3.applied if e.data] == [b"after-snapshot"]
    assert net["n1"].raft.progress["n3"].state is ProgressState.REPLICATE


def test_snapshot_loss_is_reported_and_resent() -> None:
    net, _ = n3_behind_a_snapshot(5)
    net.drop_types.add(MsgSnap)
    net.heal()
    net.tick("n1", 4)
    pr = net["n1"].raft.progress["n3"]
    assert pr.state is ProgressState.SNAPSHOT
    net["n1"].node.report_snapshot("n3", ok=False)
    net.drop_types.clear()
    net.stabilize()
    net.tick("n1", 4)
    assert len(net["n3"].installed) == 1
    assert net["n3"].raft.log.commit_index == net["n1"].raft.log.commit_index


def test_a_configuration_installed_with_a_snapshot_is_as_of_it_after_a_restart() -> None:
    """Its conf_index (the change a majority must have applied before the next one) is the
    snapshot's index, not the older index of the last change this node applied itself."""
    net, meta = n3_behind_a_snapshot(20)
    net.heal()
    net.tick("n1", 4)
    n3 = net["n3"]
    assert [s.meta for s in n3.installed] == [meta]
    assert n3.raft.conf_index == meta.index
    n3.restart()
    assert n3.raft.conf_index == meta.index
