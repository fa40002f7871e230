"""The leader cuts AppendEntries batches so that each fits one datagram.

``raftd.server.Server`` gives the core ``max_msg_bytes`` = ``[raft] max_datagram_bytes``, less
what a cluster secret's seal adds (``PeerAuth.overhead``), less ``peer_header_bytes`` of the
members; the core cuts every MsgApp to that many entry bytes (``RaftLog.slice`` ->
``limit_size``). Here the real core, so configured, replicates hundreds of entries of mixed
sizes over the harness network, and every message it sends, encoded by the production codec
and sealed when there is a secret, must fit one datagram: nothing is left to ``PeerLink``'s
fragmentation, which exists for snapshots and single entries larger than a datagram.

The largest entry here is the largest batch of writes ``Replica`` proposes (its
``max_entry_bytes`` is the same budget); a single write above that budget makes a larger entry,
which travels fragmented by design. The long-lived log has terms and indexes past 2**32, where
every number takes its widest encoding.
"""

from __future__ import annotations

import random

import pytest

from raftd.core import ConfState, HardState, MemoryStorage
from raftd.core.messages import MsgApp
from raftd.core.state import ENTRY_OVERHEAD_BYTES, Snapshot, SnapshotMeta
from raftd.replica import BATCH_HEADER_BYTES
from raftd.server import peer_header_bytes
from raftd.statemachine import encode_batch
from raftd.wire.auth import PeerAuth
from raftd.wire.peer import encode_peer
from tests.unit.core.harness import Recorder, log_of

IDS = {
    "ipv4": ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"),
    "ipv6": ("[fd00:1234:5678:9abc::101]:7001", "[fd00:1234:5678:9abc::102]:7001",
             "[fd00:1234:5678:9abc::103]:7001"),
    "dns": ("raft-node-1.storage.eu-west-1.example.internal:7001",
            "raft-node-2.storage.eu-west-1.example.internal:7001",
            "raft-node-3.storage.eu-west-1.example.internal:7001"),
}
TINY = 150
ENTRIES = 400
NOW_MS = 1_760_000_000_000
"""A leader timestamp of today's size (it heads every batch)."""


def entry_sizes(rng: random.Random, largest: int) -> list[int]:
    """A run of tiny entries (which must share batches), then a mix up to ``largest``."""
    tiny = [rng.randint(0, 20) for _ in range(TINY)]
    quarter = max(40, largest // 4)  # a 512-byte sealed datagram with long names is small
    return tiny + [rng.choice((rng.randint(0, 40), rng.randint(40, quarter),
                               rng.randint(largest // 2, largest), largest))
                   for _ in range(ENTRIES - TINY)]


@pytest.mark.parametrize("datagram", [512, 1400])
@pytest.mark.parametrize("names", sorted(IDS))
@pytest.mark.parametrize("secret", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize(("base_index", "base_term"), [(0, 0), (1 << 40, 1 << 33)],
                         ids=["new-log", "long-lived-log"])
def test_every_batch_fits_one_datagram(datagram: int, names: str, secret: bool,
                                       base_index: int, base_term: int) -> None:
    ids = IDS[names]
    auth = {i: PeerAuth(b"s" * 32, i, epoch=k) for k, i in enumerate(ids)} if secret else None
    overhead = auth[ids[0]].overhead if auth is not None else 0
    batch_bytes = datagram - overhead - peer_header_bytes(ids)  # as Server.__init__
    net = Recorder(3, ids=ids)
    for node in net.nodes.values():
        node.config.max_msg_bytes = batch_bytes
        node.storage = MemoryStorage(ConfState(voters=ids))
        if base_index:  # a log that starts after a snapshot, far into the index space
            node.storage.apply_snapshot(
                Snapshot(SnapshotMeta(index=base_index, term=base_term,
                                      conf_state=ConfState(voters=ids))))
        node.storage.set_hard_state(HardState(current_term=base_term))
        node.restart()
    leader = ids[0]
    net.campaign(leader)
    assert net.leaders() == [leader]
    rng = random.Random(f"{datagram}/{names}/{secret}/{base_index}")
    entry_budget = batch_bytes - ENTRY_OVERHEAD_BYTES  # Replica's max_entry_bytes, as Server's
    largest = len(encode_batch(NOW_MS, [bytes(entry_budget - BATCH_HEADER_BYTES)]))
    for size in entry_sizes(rng, largest):  # all in one turn: the leader has to cut
        net[leader].node.propose(rng.randbytes(size))
    net.stabilize()

    too_big = []
    for m in net.sent:
        payload = encode_peer(m)
        sent = auth[m.src].seal(m.dst, payload) if auth is not None else payload
        if len(sent) > datagram:
            too_big.append((type(m).__name__, len(getattr(m, "entries", ())), len(sent)))
    assert too_big == [], f"datagrams above {datagram} bytes (type, entries, bytes)"
    batches = [m for m in net.sent if isinstance(m, MsgApp) and m.entries]
    assert max(len(m.entries) for m in batches) >= 5, "tiny entries should share batches"
    assert len(batches) < 2 * ENTRIES * 3 // 4, "batches should hold several entries"
    assert log_of(net, ids[1]) == log_of(net, ids[2]) == log_of(net, leader)
    assert net[leader].raft.log.last_index() == base_index + 1 + ENTRIES  # the no-op too
