"""A rogue process for tests/integration/test_security.py: it speaks Raft to a cluster's UDP
ports without the cluster's secret.

    python -m tests.integration.security_rogue --members A,B,C --term T --last-index I \\
        [--leader L] [--capture-seconds S] [--repeat N] [--kinds vote,app,...]

Every message is well-formed (``wire.peer``) and would disrupt a cluster that trusted its
``src`` field: votes and pre-votes in a huge term (also as a leadership transfer),
AppendEntries in a huge term carrying a write of the key ``rogue``, heartbeats in a huge
term, TimeoutNow in the current term, and an InstallSnapshot naming the rogue the only
voter (``--kinds`` picks some of ``KINDS``). Each is sent, spoofing every other member as
``src``, in these ways:

- ``plain``: as a node without a secret sends it;
- ``foreign``: sealed (``wire.auth``) with a secret of the rogue's own, another cluster's;
- with ``--capture-seconds``, the rogue also sniffs the loopback interface (AF_PACKET, needs
  CAP_NET_RAW) for the cluster's own sealed datagrams, then sends each captured datagram
  again (``replayed``) and a copy re-tagged with a key of its own under the real cluster id
  it read from the capture (``forged``).

It prints one JSON object: per destination, how many datagrams of each kind it sent (and
``capture_error`` when sniffing was impossible). It never reads the secret file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from raftd.core.messages import (
    Message,
    MsgApp,
    MsgHeartbeat,
    MsgPreVote,
    MsgSnap,
    MsgTimeoutNow,
    MsgVote,
)
from raftd.core.state import ConfState, Entry, EntryType, Snapshot, SnapshotMeta
from raftd.statemachine import SET, encode_batch, encode_command
from raftd.wire import auth
from raftd.wire.peer import encode_peer

BIG = 10**9
ROGUE = "127.0.0.1:1"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


KINDS = ("vote", "transfer_vote", "pre_vote", "app", "heartbeat", "snap", "timeout_now")


def messages(members: list[str], dst: str, term: int, last_index: int, leader: str | None,
             kinds: set[str]) -> list[Message]:
    """The disruptive messages to ``dst``, each spoofing every other member."""
    batch = encode_batch(int(time.time() * 1000), [encode_command(SET, "rogue", "pwned")])
    out: list[Message] = []
    for src in members:
        if src == dst:
            continue
        candidates: dict[str, Message] = {
            "vote": MsgVote(term=BIG, src=src, dst=dst, last_log_index=BIG, last_log_term=BIG),
            "transfer_vote": MsgVote(term=BIG, src=src, dst=dst, last_log_index=BIG,
                                     last_log_term=BIG, transfer=True),
            "pre_vote": MsgPreVote(term=BIG, src=src, dst=dst, last_log_index=BIG,
                                   last_log_term=BIG),
            "app": MsgApp(term=BIG, src=src, dst=dst, prev_log_index=last_index,
                          prev_log_term=term,
                          entries=(Entry(BIG, last_index + 1, EntryType.NORMAL, batch),),
                          leader_commit=last_index + 1),
            "heartbeat": MsgHeartbeat(term=BIG, src=src, dst=dst, leader_commit=last_index),
            "snap": MsgSnap(term=BIG, src=src, dst=dst, snapshot=Snapshot(
                meta=SnapshotMeta(index=BIG, term=BIG, conf_state=ConfState(voters=(ROGUE,))),
                data=b"")),
        }
        if src == leader:
            candidates["timeout_now"] = MsgTimeoutNow(term=term, src=src, dst=dst)
        out += [msg for kind, msg in candidates.items() if kind in kinds]
    return out


def address(member: str) -> tuple[str, int]:
    host, _, port = member.rpartition(":")
    return host, int(port)


def capture(ports: set[int], seconds: float) -> list[tuple[int, bytes]]:
    """Sealed datagrams between cluster ports seen on loopback: (destination port, bytes)."""
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
    sniffer.bind(("lo", 0))
    sniffer.settimeout(0.1)
    seen: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                frame, meta = sniffer.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] == PACKET_OUTGOING:
                continue  # loopback shows each packet twice: keep the received copy
            datagram = _udp_payload(frame[14:], ports)
            if datagram is not None and datagram[1][:1] == bytes((auth.MAGIC,)) \
                    and datagram[1][2:3] == bytes((auth.KIND,)):
                seen.append(datagram)
    finally:
        sniffer.close()
    return seen


def _udp_payload(packet: bytes, ports: set[int]) -> tuple[int, bytes] | None:
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    src_port, dst_port, length, _ = struct.unpack_from(">HHHH", packet, header)
    if src_port not in ports or dst_port not in ports:
        return None
    return dst_port, packet[header + 8:header + length]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", required=True)
    parser.add_argument("--term", type=int, required=True)
    parser.add_argument("--last-index", type=int, required=True)
    parser.add_argument("--leader")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--capture-seconds", type=float, default=0.0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args(argv)
    kinds = set(args.kinds.split(","))
    members = args.members.split(",")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # A key of the rogue's own: sealed datagrams of "another cluster".
    foreign = auth.PeerAuth(os.urandom(32), ROGUE, int.from_bytes(os.urandom(8), "big"))
    sent: dict[str, Counter[str]] = defaultdict(Counter)
    report: dict[str, Any] = {"sent": sent}

    for dst in members:
        for msg in messages(members, dst, args.term, args.last_index, args.leader, kinds):
            plain = encode_peer(msg)
            for _ in range(args.repeat):
                sock.sendto(plain, address(dst))
                sent[dst]["plain"] += 1
                sock.sendto(foreign.seal(dst, plain), address(dst))
                sent[dst]["foreign"] += 1

    if args.capture_seconds > 0:
        port_of = {address(m)[1]: m for m in members}
        try:
            captured = capture(set(port_of), args.capture_seconds)
        except OSError as exc:
            report["capture_error"] = f"cannot sniff loopback: {exc}"
        else:
            report["captured"] = len(captured)
            for port, datagram in captured:
                dst = port_of[port]
                for _ in range(args.repeat):
                    sock.sendto(datagram, address(dst))
                    sent[dst]["replayed"] += 1
                # Same header (the real cluster id), the rogue's own tag: a forgery.
                forged = datagram[:-auth.TAG_BYTES] + os.urandom(auth.TAG_BYTES)
                sock.sendto(forged, address(dst))
                sent[dst]["forged"] += 1
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
