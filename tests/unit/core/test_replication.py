"""Leader-side replication flow control, driven deterministically over the harness network.

- The bounded in-flight window (``raftd.core.progress.Inflights``): a follower that does not
  acknowledge gets at most ``max_inflight`` MsgApps carrying entries, then nothing more until
  acks come back.
- Fast backtracking (Raft §5.3, the optimization at its end): a follower rejecting a MsgApp
  hints at the last index of the term it holds there, and the leader skips every entry of a
  mismatching term at once, so repairing a long conflicting log takes O(terms) round trips,
  not O(entries).
"""

from __future__ import annotations

import pytest

from raftd.core import ConfState, HardState, MemoryStorage, StateRole
from raftd.core.messages import MsgApp, MsgAppResp
from raftd.core.progress import ProgressState
from raftd.core.state import Entry
from tests.unit.core.harness import Recorder, log_of


def appends(net: Recorder, dst: str) -> list[MsgApp]:
    """The MsgApps carrying entries that were sent to ``dst`` (heartbeat-like empty ones not)."""
    return [m for m in net.sent if isinstance(m, MsgApp) and m.dst == dst and m.entries]


def test_a_silent_follower_gets_at_most_the_window_then_acks_resume_it() -> None:
    net = Recorder(3)
    net.campaign("n1")
    leader = net["n1"]
    window = leader.config.max_inflight
    assert leader.raft.role is StateRole.LEADER
    assert leader.raft.progress["n2"].state is ProgressState.REPLICATE
    net.held.add(("n2", "n1"))  # n2 receives and appends, but its acks do not come back
    net.sent.clear()
    first = leader.raft.log.last_index() + 1
    for i in range(3 * window):  # one proposal per turn: one MsgApp per follower per turn
        net.propose("n1", b"w%d" % i)
    last = leader.raft.log.last_index()
    assert last == first + 3 * window - 1

    sent = appends(net, "n2")
    assert len(sent) == window, "a follower that does not answer gets at most the window"
    assert [e.index for m in sent for e in m.entries] == list(range(first, first + window))
    assert len(appends(net, "n3")) == 3 * window  # n3 answers: never paused
    assert leader.raft.log.commit_index == last  # n1 and n3 are a majority
    assert len(net.waiting) == window  # n2's acks, held back

    # One ack frees one slot: one more MsgApp carries everything still missing (2 x window
    # small entries fit one batch), and the window is full again.
    net.sent.clear()
    net.release(1)
    [resumed] = appends(net, "n2")
    assert [e.index for e in resumed.entries] == list(range(first + window, last + 1))
    assert leader.raft.progress["n2"].paused()

    # All acks come back: n2 is acknowledged up to the leader's last index, nothing is resent.
    net.held.clear()
    net.sent.clear()
    net.release()
    assert appends(net, "n2") == []
    assert leader.raft.progress["n2"].match_index == last
    assert not leader.raft.progress["n2"].paused()
    assert log_of(net, "n2") == log_of(net, "n1")

    # The window is per follower and reopens: the next proposal goes out at once.
    net.propose("n1", b"after")
    assert [m.entries[-1].index for m in appends(net, "n2")] == [last + 1]


def runs(*terms: tuple[int, int]) -> list[Entry]:
    """A log from index 1 of (term, count) runs."""
    out: list[Entry] = []
    for term, count in terms:
        out.extend(Entry(term=term, index=len(out) + 1, data=b"t%d" % term) for _ in range(count))
    return out


@pytest.mark.parametrize(
    ("leader_log", "follower_log", "rejections"),
    [
        pytest.param(runs((1, 2), (3, 10)), runs((1, 2), (2, 100)), 1,
                     id="follower-longer-with-100-entries-of-an-older-term"),
        pytest.param(runs((1, 2), (5, 60)), runs((1, 2), (2, 20), (3, 20), (4, 20)), 1,
                     id="60-conflicting-entries-of-three-older-terms"),
        pytest.param(runs((1, 2), (2, 30), (5, 30)), runs((1, 2), (2, 10), (3, 50)), 2,
                     id="50-conflicting-entries-against-two-leader-terms"),
    ],
)
def test_fast_backtracking_costs_one_rejection_per_term_not_per_entry(
    leader_log: list[Entry], follower_log: list[Entry], rejections: int
) -> None:
    """n1 and n3 hold ``leader_log``, n2 ``follower_log``; they agree on indexes 1-2 only.
    n1 is elected (its last term is the newest) and repairs n2's log."""
    net = Recorder(3)
    term = max(e.term for e in leader_log + follower_log)
    for id, log in (("n1", leader_log), ("n2", follower_log), ("n3", leader_log)):
        node = net[id]
        node.storage = MemoryStorage(ConfState(voters=("n1", "n2", "n3")))
        node.storage.set_hard_state(HardState(current_term=term))
        node.storage.append(log)
        node.restart()
    conflicting = sum(1 for e in follower_log if e.index > 2)
    conflicting_terms = {e.term for e in follower_log[2:]} | {e.term for e in leader_log[2:]}

    net.campaign("n1")
    assert net.leaders() == ["n1"]
    refused = [m for m in net.sent if isinstance(m, MsgAppResp) and m.src == "n2" and m.reject]
    assert len(refused) == rejections, [(m.index, m.reject_hint, m.log_term) for m in refused]
    assert len(refused) <= len(conflicting_terms) < conflicting
    probes = [m for m in net.sent if isinstance(m, MsgApp) and m.dst == "n2"]
    assert len(probes) <= rejections + 2, "a probe per rejection, then the repairing batch"
    assert log_of(net, "n2") == log_of(net, "n1")
    assert net["n1"].raft.progress["n2"].match_index == net["n1"].raft.log.last_index()
