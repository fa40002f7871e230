"""Disk faults on real processes: a node whose disk fills up, and a node whose WAL rots.

A full disk: node 0 keeps its data dir on a small tmpfs (mounted by the test; skipped, saying
why, where it cannot be). WAL segments are 64 MiB and preallocated whole, the next one once the
current one is half full, so with room for the first segment but not for a second the node
enters the no-space condition after 32 MiB of log. While it leads, writes get ``no_space`` and
leadership moves; as a follower it takes entries until its current segment is used up, then
drops them (it must never crash); the other two nodes go on committing. Removing a filler file
from the tmpfs gives the space back: the node preallocates its next segment and catches up.

A corrupt WAL: a byte flipped inside an early record of a stopped follower makes it refuse to
start, naming the file and the byte offset; the documented recovery (README, "Disk full or a
corrupt log": remove-node, wipe the data dir, start blank, add-node) brings it back with the
same state hash as the rest of the cluster.
"""

from __future__ import annotations

import re
import shutil
import signal
import struct
from pathlib import Path

from raftctl import Client
from raftctl.errors import ServerError
from raftd.storage.wal import DEFAULT_SEGMENT_BYTES
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    STEADY,
    Response,
    agreed_state_hash,
    current_leader,
    diag_of,
    diagnostic,
    wait_caught_up,
    wait_for_leader,
    wait_until,
    write_all,
)
from tests.integration.test_cli import raftctl
from tests.unit.storage.tmpfs import mounted_tmpfs

MIB = 1 << 20
SEGMENT = DEFAULT_SEGMENT_BYTES
TMPFS_BYTES = 2 * SEGMENT + 8 * MIB
"""Room for two segments and the small files: with the filler, not for the second one."""
FILLER_BYTES = SEGMENT // 2
VALUE_BYTES = 768 << 10
KEYS = [f"big{i}" for i in range(8)]
"""Values overwrite a few keys: the log grows, the state (and every node's memory) does not."""
MAX_WRITES = SEGMENT // VALUE_BYTES + 16
"""More than enough writes to fill half a segment (a bound, so a bug cannot loop forever)."""


def value(n: int) -> bytes:
    return n.to_bytes(4, "little") * (VALUE_BYTES // 4)


def test_full_disk_moves_leadership_and_the_node_catches_up_once_space_returns(
    make_cluster: ClusterFactory,
) -> None:
    # Node 0 must keep the leadership handed to it until its disk fills: an election on a busy
    # machine would redirect the writes pinned to it, and no write would ever be refused.
    cluster = make_cluster(3, raft=STEADY)
    full_ep = cluster.endpoints[0]
    data_dir = cluster.base_dir / "data" / "n1"
    with mounted_tmpfs(data_dir, f"{TMPFS_BYTES // MIB}m"):
        filler = data_dir / "filler"  # another user of the disk, deleted to free space
        with open(filler, "wb") as f:
            f.writelines(bytes(MIB) for _ in range(FILLER_BYTES // MIB))
        try:
            cluster.start_all()
            wait_for_leader(cluster)
            with Client(cluster.endpoints, timeout=DEADLINE) as client:
                assert client.transfer_leader(full_ep) == full_ep
            # Phase 1 needs node 0 to lead: with STEADY timeouts it keeps what it was handed.
            wait_until(lambda: current_leader(cluster) == 0, "node 0 (small disk) to lead")
            last: dict[str, bytes] = {}
            n = 0

            # 1. Leading with a full disk: a write is refused with no_space.
            refused: ServerError | None = None
            with Client([full_ep], timeout=DEADLINE) as pinned:
                while refused is None and n < MAX_WRITES:
                    try:
                        pinned.set(KEYS[n % len(KEYS)], value(n))
                    except ServerError as e:
                        refused = e
                    else:
                        last[KEYS[n % len(KEYS)]] = value(n)
                    n += 1
            assert refused is not None, f"no write was refused: {diag_of(cluster, 0)}"
            assert refused.code == "no_space", refused
            assert diag_of(cluster, 0)["noSpace"] is True
            new_leader = wait_until(lambda: (lead := current_leader(cluster)) not in (None, 0)
                                    and lead, "leadership to leave the full node")

            # 2. The others go on committing; the full node drops what no longer fits.
            with Client(cluster.endpoints, timeout=DEADLINE) as client:
                def dropping() -> bool:
                    return diag_of(cluster, 0)["droppedDatagrams"]["no_space"] > 0

                start = n
                while not dropping():
                    assert n - start < MAX_WRITES, f"never dropped: {diag_of(cluster, 0)}"
                    client.set(KEYS[n % len(KEYS)], value(n))
                    last[KEYS[n % len(KEYS)]] = value(n)
                    n += 1
                for _ in range(len(KEYS)):
                    client.set(KEYS[n % len(KEYS)], value(n))
                    last[KEYS[n % len(KEYS)]] = value(n)
                    n += 1
            full, lead = diag_of(cluster, 0), diag_of(cluster, new_leader)
            assert cluster.is_running(0) and full["noSpace"] is True
            assert full["log"]["appliedIndex"] < lead["log"]["commitIndex"]

            # 3. Space comes back: the node preallocates its next segment and catches up.
            filler.unlink()
            wait_until(lambda: diag_of(cluster, 0)["noSpace"] is False, "the condition to clear")
            caught_up = wait_caught_up(cluster, 0, new_leader)
            assert caught_up["stateHash"] == diag_of(cluster, new_leader)["stateHash"]
            with Client(cluster.endpoints, timeout=DEADLINE) as client:
                assert {k: client.get(k) for k in last} == last
            assert cluster.is_running(0)
        finally:
            cluster.stop_all()  # before the unmount: node 0 holds files on the tmpfs
    log = cluster.log_paths[0].read_text(errors="replace")
    assert "no space left on device for the next WAL segment" in log
    assert "CRITICAL" not in log, "the full node stopped on an error"


def corrupt_first_record(segment: Path) -> int:
    """Flip a byte inside the payload of the segment's first record; returns its offset."""
    offset = 8  # right after the segment header
    with open(segment, "r+b") as f:
        f.seek(offset)
        length, _crc = struct.unpack("<II", f.read(8))
        f.seek(offset + 8 + length // 2)
        byte = f.read(1)[0]
        f.seek(offset + 8 + length // 2)
        f.write(bytes([byte ^ 0xFF]))
    return offset


def test_corrupt_wal_record_stops_the_node_and_remove_wipe_add_recovers_it(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    wait_for_leader(cluster)
    write_all(cluster.endpoints, {f"k{i:03d}": i for i in range(300)})
    leader = wait_for_leader(cluster)  # after the writes: leadership may have moved meanwhile
    node = next(i for i in range(len(cluster)) if i != leader)
    endpoint = cluster.endpoints[node]
    others = [e for e in cluster.endpoints if e != endpoint]
    expected = agreed_state_hash(cluster)
    cluster.kill(node, signal.SIGTERM)
    assert cluster.wait(node, DEADLINE) == 0

    data_dir = cluster.base_dir / "data" / f"n{node + 1}"
    segment = min(data_dir.glob("*.wal"))
    offset = corrupt_first_record(segment)  # many valid records follow: not a torn tail
    cluster.start(node)
    assert cluster.wait(node, DEADLINE) != 0
    log = cluster.log_paths[node].read_text(errors="replace")
    named = re.escape(f"n{node + 1}/{segment.name}")
    assert re.search(rf"{named}: corrupt record at byte offset {offset}\b", log), log[-2000:]

    # The documented recovery: remove-node, wipe the data dir, start blank, add-node.
    removed = raftctl(others, "remove-node", endpoint)
    assert removed.returncode == 0, removed.stderr
    shutil.rmtree(data_dir)
    cluster.start(node)
    added = raftctl(others, "add-node", endpoint)
    assert added.returncode == 0, added.stderr
    leader = wait_for_leader(cluster)

    def back() -> Response | None:
        diag, lead = diagnostic(endpoint), diagnostic(cluster.endpoints[leader])
        if diag is None or lead is None or endpoint not in lead["volatile"]["voters"]:
            return None
        return diag if diag["log"]["appliedIndex"] >= lead["log"]["commitIndex"] else None

    recovered = wait_until(back, "the wiped node to be a caught-up voter again")
    assert recovered["stateHash"] == expected == diag_of(cluster, leader)["stateHash"]
