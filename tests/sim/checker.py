"""Safety checkers of the simulator: what must hold after every step, whatever the faults.

Theory of operation (TigerBeetle's state_checker, plus a model of the client-visible state):

- ``committed`` is the one global sequence of committed entries, index -> (term, type, data),
  grown by whichever replica applies an index first. Every replica's apply stream (the
  ``Replica(on_apply=...)`` observer) must follow it entry by entry, from index 1 after each
  restart, so a committed entry can never change or vanish (State Machine Safety, Raft §5.4.3).
- ``Model`` applies that same global sequence with an *independent*, ideal exactly-once
  semantics: a (client_id, seq) runs the first time it appears and never again. Each
  acknowledged write must carry the model's result for it, the replicas' state machines must
  equal the model at the end (so a retry applied twice, or an acknowledged write lost, shows
  up), and each linearizable read must return a state the key held at some point between the
  read's submission and its answer.
- Log Matching (Raft §5.3), after every write: a leader creates at most one entry per index in
  its term, so every entry any log ever held at an (index, term) must have the same type and
  data and follow an entry of the same term. By induction down the index, two logs that hold
  an entry with the same index and term then agree on every entry before it that both hold.
  Each write checks only the entries it writes, so the cost follows the entries written;
  ``check_logs`` checks the final logs pairwise as well.
- Election safety: one leader per term, ever; a granted vote is never granted again to another
  candidate in the same term (votes are observed on the wire, i.e. once durable). Only a voter
  (in its own view of the configuration) campaigns: a learner never does. (Whether a node that
  sees itself as a learner may *grant* a vote is a design choice, not a safety property: etcd
  lets it, since it may have been promoted without knowing yet; a candidate only ever counts
  the votes of its own voters.)
- Leader completeness (Raft §5.4): the leader of term T holds every entry committed in a term
  below T. Which term committed an entry is seen at the leaders: ``commit_by_term`` keeps, per
  term, the highest commit index its leader reached (an upper bound of the entry's commit term,
  so the check never blames a leader wrongly: a leader of term 1 may well win *after* the
  leader of term 2 committed something, with votes cast in term 1). Checked when a leader is
  first seen, and whenever a leader of a lower term commits more while it leads.
- The configuration follows the committed log: ``config`` starts from the initial voters and
  applies every CONF_CHANGE entry of the global sequence as ``Raft.apply_conf_change`` does, so
  the end of a run knows which nodes must have converged (the members) and which not (removed
  nodes, nodes never added). Every node's own configuration must be the committed log's at the
  index it reflects (its applied index, or the index of the configuration entry it recorded as
  applied before a restart), and a snapshot's configuration the log's at the snapshot's index.
- Durability: a node never sends a message of a term it has not persisted; its persisted term
  never goes back across a restart; what a restarted node recovers (snapshot plus log) still
  covers every entry it had applied (those were fsync'd before they were applied). A wiped node
  is exempt from the last two, and starts a fresh history.
- Snapshots: every state machine state that stands for a log prefix (a capture taken for a
  snapshot, a snapshot installed from the leader, the state restored at a restart) must equal
  the model's state at that index, sessions included (a retry after a restore must still be
  deduplicated, which the model then checks).

Violations raise ``Violation`` at once; the simulator adds the seed and the replay command.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftd.core import ConfState, Entry, EntryType, Message, Snapshot, StateRole
from raftd.core.confchange import ConfChange, InvalidConfChange, apply_change
from raftd.core.errors import Compacted
from raftd.core.messages import MsgPreVote, MsgPreVoteResp, MsgVote, MsgVoteResp
from raftd.core.raft import Raft
from raftd.statemachine import DELETE, SET, DictStateMachine, decode_batch
from raftd.storage.disk import DiskStorage

SessionKey = tuple[str, int]
KeyState = tuple[Any, int] | None
"""(value, revision) of a present key, None while absent."""


class Violation(AssertionError):
    """A safety property broke."""


def _conf(conf: ConfState) -> str:
    return (f"voters {','.join(conf.voters)} learners {','.join(conf.learners) or '-'} "
            f"auto {','.join(conf.auto_promote) or '-'}")


def members(conf: ConfState) -> tuple[str, ...]:
    """Voters and learners: every node the leader of ``conf`` replicates to."""
    return conf.voters + conf.learners


@dataclass(slots=True)
class Model:
    """The client-visible state the committed log must produce under ideal exactly-once rules."""

    data: dict[str, tuple[Any, int]]
    revision: int
    results: dict[SessionKey, dict[str, Any]]
    """Result of each (client_id, seq) at its one execution."""
    history_index: dict[str, list[int]]
    """Per key, the global log index of every write that changed it, ascending."""
    history: dict[str, list[KeyState]]
    """Per key, the state after each of those writes."""
    revision_at: list[int]
    """The revision counter after each committed index (position index - 1)."""

    @classmethod
    def empty(cls) -> Model:
        return cls({}, 0, {}, {}, {}, [])

    def state_at(self, index: int) -> tuple[dict[str, tuple[Any, int]], int]:
        """(data, revision) once the first ``index`` committed entries are applied."""
        data = {}
        for key, indexes in self.history_index.items():
            count = bisect.bisect_right(indexes, index)
            state = self.history[key][count - 1] if count else None
            if state is not None:
                data[key] = state
        return data, self.revision_at[index - 1] if index else 0

    def apply(self, index: int, data: bytes) -> None:
        _, commands = decode_batch(data)
        for op, key, value, client_id, seq, _first_unacked, if_revision, if_absent in commands:
            if client_id is None or if_revision is not None or if_absent:
                raise Violation(f"index {index}: a command the workload never issues: {op, key}")
            session_key = (client_id, seq)
            if session_key in self.results:
                continue  # a retry: the session must answer it from its cache
            self.results[session_key] = self._execute(index, op, key, value)

    def _execute(self, index: int, op: int, key: str, value: Any) -> dict[str, Any]:
        current = self.data.get(key)
        if op == SET:
            self.revision += 1
            self.data[key] = (value, self.revision)
            self._record(index, key, (value, self.revision))
            return {"revision": self.revision}
        if op == DELETE:
            if current is None:
                return {"found": False}
            self.revision += 1
            del self.data[key]
            self._record(index, key, None)
            return {"found": True, "revision": self.revision}
        raise Violation(f"index {index}: unknown op {op}")

    def _record(self, index: int, key: str, state: KeyState) -> None:
        self.history_index.setdefault(key, []).append(index)
        self.history.setdefault(key, []).append(state)


class SafetyChecker:
    def __init__(self, initial: ConfState) -> None:
        self.committed: list[tuple[int, EntryType, bytes]] = []
        self.config = initial
        """The configuration after the last entry of ``committed``."""
        self._conf_indexes = [0]
        self._confs = [initial]
        """The configuration after each committed entry that changed it, by index."""
        self.conf_changes = 0
        """Configuration entries in ``committed`` that changed it."""
        self.member_set = frozenset(members(initial))
        self.removed: frozenset[str] = frozenset()
        """Nodes that were members once and are not any more."""
        self._leader: tuple[int, str, Raft] | None = None
        """Term, id and Raft of the leader of the highest term seen, while it leads."""
        self.commit_by_term: dict[int, tuple[int, int]] = {}
        """Term -> the highest commit index its leader reached, and the term of that entry."""
        self.model = Model.empty()
        self.written: dict[tuple[int, int], tuple[int, EntryType, bytes, str]] = {}
        """(index, term) -> the term before it, type, data, and the first node that wrote it."""
        self.leaders: dict[int, str] = {}
        self.votes: dict[tuple[str, int], str] = {}
        self.term_floor: dict[str, int] = {}
        """Per node, the lowest current_term it may have now (in memory, or on disk at a restart)."""
        self.applied: dict[str, int] = {}
        """Per node incarnation, the last index it applied."""
        self.durable_applied: dict[str, int] = {}
        """Per node, entries it applied before its last crash: its disk must still hold them."""
        self.conf_applied: dict[str, int] = {}
        """Per node, the index of the last configuration it applied, as its disk holds it
        (raftd's confstate; a snapshot's counts as of its index): unknown (0) while it is
        down, since a crash may have torn the write (seed 3977)."""

    # -- per-step observations ---------------------------------------------------------------
    def on_apply(self, node: str, entry: Entry) -> None:
        expected = self.applied.get(node, 0) + 1
        if entry.index != expected:
            raise Violation(f"{node} applied index {entry.index}, expected {expected}")
        self.applied[node] = entry.index
        if entry.type is EntryType.CONF_CHANGE:
            self.conf_applied[node] = max(self.conf_applied.get(node, 0), entry.index)
        committed = self.committed
        if entry.index <= len(committed):
            term, etype, data = committed[entry.index - 1]
            if (term, etype, data) != (entry.term, entry.type, entry.data):
                raise Violation(
                    f"{node} applied {entry.index}/{entry.term} ({len(entry.data)} bytes) but "
                    f"{entry.index}/{term} ({len(data)} bytes) was committed there before"
                )
            return
        committed.append((entry.term, entry.type, entry.data))
        if entry.type is EntryType.NORMAL and entry.data:
            self.model.apply(entry.index, entry.data)
        elif entry.type is EntryType.CONF_CHANGE:
            try:
                self.config = apply_change(self.config, ConfChange.decode(entry.data))
                self.conf_changes += 1
                self._conf_indexes.append(entry.index)
                self._confs.append(self.config)
                now = frozenset(members(self.config))
                self.removed = (self.removed | self.member_set) - now
                self.member_set = now
            except InvalidConfChange:
                pass  # a no-op on every node too (e.g. a promotion proposed by two leaders)
        self.model.revision_at.append(self.model.revision)

    def on_append(self, node: str, entries: Sequence[Entry], prev_term: int) -> None:
        """Log Matching: ``node`` writes ``entries`` after an entry of ``prev_term``."""
        written = self.written
        for e in entries:
            key = (e.index, e.term)
            seen = written.get(key)
            if seen is None:
                written[key] = (prev_term, e.type, e.data, node)
            elif seen[0] != prev_term or seen[1] != e.type or seen[2] != e.data:
                raise Violation(
                    f"log matching: {node} writes {e.index}/{e.term} ({e.type.name}, "
                    f"{len(e.data)} bytes) after term {prev_term}, {seen[3]} wrote it "
                    f"({seen[1].name}, {len(seen[2])} bytes) after term {seen[0]}")
            prev_term = e.term

    def check_state(
        self, node: str, index: int, data: dict[str, tuple[Any, int]], revision: int, what: str
    ) -> None:
        """``data``/``revision`` claim to be the state after the first ``index`` entries."""
        if index > len(self.committed):
            raise Violation(f"{node}: {what} at index {index}, beyond the {len(self.committed)} "
                            "entries ever applied")
        expected, expected_revision = self.model.state_at(index)
        if data != expected or revision != expected_revision:
            wrong = sorted(k for k in expected.keys() | data.keys()
                           if data.get(k) != expected.get(k))[:5]
            raise Violation(f"{node}: {what} at index {index} differs from the committed state: "
                            f"revision {revision} vs {expected_revision}, keys {wrong}")

    def voter_sets(self) -> list[tuple[str, ...]]:
        """The committed configuration's voters, and the previous one's until a majority of
        the new voters applied the change: until then nodes still act under the previous one,
        and a node the change removed may be the only one that knows it committed (raftd
        answers remove-node only then, too)."""
        conf = self.config
        if len(self._confs) < 2:
            return [conf.voters]
        index = self._conf_indexes[-1]
        settled = sum(1 for v in conf.voters if self.conf_applied.get(v, 0) >= index)
        if settled * 2 > len(conf.voters):
            return [conf.voters]
        return [conf.voters, self._confs[-2].voters]

    def config_at(self, index: int) -> ConfState:
        """The configuration once the first ``index`` committed entries are applied."""
        return self._confs[bisect.bisect_right(self._conf_indexes, index) - 1]

    def check_config(self, node: str, index: int, conf: ConfState, what: str) -> None:
        """``conf`` claims to be the configuration after the first ``index`` entries."""
        if index > len(self.committed):
            raise Violation(f"{node}: {what} at index {index}, beyond the {len(self.committed)} "
                            "entries ever applied")
        expected = self.config_at(index)
        if conf != expected:
            raise Violation(f"{node}: {what} at index {index} is {_conf(conf)}, but the "
                            f"committed log's is {_conf(expected)}")

    def on_install(self, node: str, snapshot: Snapshot) -> None:
        """``node`` replaced its log by a leader's snapshot; its state machine restarts there."""
        meta = snapshot.meta
        if meta.index and meta.index <= len(self.committed):
            term = self.committed[meta.index - 1][0]
            if term != meta.term:
                raise Violation(f"{node} installed a snapshot at {meta.index}/{meta.term}, "
                                f"committed was /{term}")
        restored = DictStateMachine()
        restored.restore(snapshot.data)
        self.check_state(node, meta.index, restored.data, restored.revision, "installed snapshot")
        self.check_config(node, meta.index, meta.conf_state, "the installed snapshot's configuration")
        self.applied[node] = meta.index
        self.conf_applied[node] = max(self.conf_applied.get(node, 0), meta.index)

    def observe(self, node: str, raft: Raft) -> None:
        """Called after every input a node handled; cheap, since it runs thousands of times."""
        term = raft.current_term
        if term < self.term_floor.get(node, 0):
            raise Violation(f"{node} went back from term {self.term_floor[node]} to {term}")
        self.term_floor[node] = term
        if raft.role is StateRole.LEADER:
            leader = self.leaders.get(term)
            if leader is None:
                self.leaders[term] = node
                self._vote(node, term, node)
                earlier = max((c for t, c in self.commit_by_term.items() if t < term),
                              default=None)
                if earlier is not None:
                    self._check_holds(term, node, raft, *earlier)
                if self._leader is None or self._leader[0] < term:
                    self._leader = (term, node, raft)
            elif leader != node:
                raise Violation(f"two leaders in term {term}: {leader} and {node}")
            commit = raft.log.commit_index
            if commit > self.commit_by_term.get(term, (0, 0))[0]:
                mark = self.commit_by_term[term] = (commit, raft.log.term(commit))
                latest = self._leader
                if latest is not None and latest[0] > term:
                    self._check_holds(*latest, *mark)

    def _check_holds(
        self, term: int, node: str, raft: Raft, index: int, committed: int
    ) -> None:
        """Leader completeness: ``node``, leading ``term``, holds the committed entry
        ``index``/``committed`` (by Log Matching, which ``on_append`` verifies, the whole
        prefix before it too)."""
        if raft.role is not StateRole.LEADER or raft.current_term != term:
            return  # it no longer leads (or it crashed: on_crash forgets it)
        try:
            held = raft.log.term(index)
        except Compacted:
            return  # below its snapshot, which holds applied, i.e. committed, state
        if held != committed:
            raise Violation(f"{node} leads term {term} but holds {index}/{held or '-'} where "
                            f"{index}/{committed} was committed")

    def on_send(
        self, node: str, messages: Sequence[Message], persisted_term: int,
        voters: tuple[str, ...],
    ) -> None:
        """``voters``: the configuration the sender acts on (its own, possibly stale, view)."""
        for m in messages:
            if m.term > persisted_term and not isinstance(m, MsgPreVote | MsgPreVoteResp):
                raise Violation(
                    f"{node} sent {type(m).__name__} of term {m.term} "
                    f"with only term {persisted_term} on disk"
                )
            if isinstance(m, MsgVoteResp) and not m.reject:
                self._vote(node, m.term, m.dst)
            elif isinstance(m, MsgVote | MsgPreVote) and node not in voters:
                raise Violation(f"{node}, not a voter ({','.join(voters)}), sent "
                                f"{type(m).__name__} to {m.dst} in term {m.term}")

    def _vote(self, voter: str, term: int, candidate: str) -> None:
        previous = self.votes.setdefault((voter, term), candidate)
        if previous != candidate:
            raise Violation(f"{voter} voted for {previous} and {candidate} in term {term}")

    # -- crashes and restarts ----------------------------------------------------------------
    def on_crash(self, node: str, storage: DiskStorage | None) -> None:
        if self._leader is not None and self._leader[1] == node:
            self._leader = None
        hs = storage.initial_state()[0] if storage is not None else None
        self.term_floor[node] = hs.current_term if hs is not None else 0
        self.durable_applied[node] = self.applied.get(node, 0)
        self.applied[node] = 0
        self.conf_applied[node] = 0

    def on_wipe(self, node: str) -> None:
        """A lost disk: the node's durable history is gone, by the operator's hand."""
        self.term_floor[node] = 0
        self.durable_applied[node] = 0
        self.conf_applied[node] = 0
        for key in [k for k in self.votes if k[0] == node]:
            del self.votes[key]

    def on_restart(
        self, node: str, storage: DiskStorage, raft: Raft, sm: DictStateMachine
    ) -> None:
        if raft.current_term < self.term_floor.get(node, 0):
            raise Violation(
                f"{node} restarted in term {raft.current_term}, "
                f"below its persisted term {self.term_floor[node]}"
            )
        base = raft.log.applied_index
        if base:
            self.check_state(node, base, sm.data, sm.revision, "state restored from its snapshot")
        self.applied[node] = base
        self.conf_applied[node] = max(storage.conf_index(), storage.snapshot_meta().index)
        applied = self.durable_applied.get(node, 0)
        last = max(storage.last_index(), storage.snapshot_meta().index)
        if last < applied:
            raise Violation(f"{node} recovered a log ending at {last} but had applied {applied}")
        first = storage.first_index()
        if first <= applied:
            for e in storage.entries(first, applied + 1):
                term, etype, data = self.committed[e.index - 1]
                if (e.term, e.type, e.data) != (term, etype, data):
                    raise Violation(f"{node} recovered {e.index}/{e.term}, committed was /{term}")
        self.observe(node, raft)

    # -- the workload's answers --------------------------------------------------------------
    def check_write(self, client: str, seq: int, response: dict[str, Any]) -> None:
        expected = self.model.results.get((client, seq))
        if expected is None:
            raise Violation(f"{client} seq {seq} acknowledged but never committed: {response}")
        got = {k: v for k, v in response.items() if k not in ("type", "success")}
        if got != expected:
            raise Violation(f"{client} seq {seq} answered {got}, but its one execution gave {expected}")

    def check_read(self, key: str, submitted_at: int, response: dict[str, Any]) -> None:
        """Linearizability of one read: it returns a state ``key`` had at some point between
        the read's submission (when ``submitted_at`` entries were known committed) and now.
        """
        index = self.model.history_index.get(key, [])
        states = self.model.history.get(key, [])
        lowest = bisect.bisect_right(index, submitted_at)  # writes to key committed before it
        if response["found"]:
            got: KeyState = (response["value"], response["revision"])
            candidates = [p for p in range(max(lowest, 1), len(states) + 1) if states[p - 1] == got]
        else:
            candidates = [p for p in range(lowest, len(states) + 1)
                          if p == 0 or states[p - 1] is None]
        if not candidates:
            latest = states[lowest - 1] if lowest else None
            raise Violation(
                f"read of {key!r} returned {response} but the key held {latest} when the read "
                f"was submitted (after index {submitted_at}) and later {states[lowest:]}"
            )

    # -- end of run --------------------------------------------------------------------------
    def check_converged(self, states: dict[str, tuple[dict[str, tuple[Any, int]], int]]) -> None:
        model = self.model
        for node, (data, revision) in states.items():
            if revision != model.revision or data != model.data:
                missing = sorted(k for k in model.data if data.get(k) != model.data[k])[:5]
                extra = sorted(k for k in data if k not in model.data)[:5]
                raise Violation(
                    f"{node}'s state differs from the committed log's: revision {revision} vs "
                    f"{model.revision}; wrong or missing {missing}; unexpected {extra}"
                )

    def check_logs(self, logs: dict[str, list[Entry]], settled: dict[str, int]) -> None:
        """Log Matching (Raft §5.3) across every pair of nodes, and committed prefixes.

        Each log may start anywhere (compaction); entries carry their index. ``settled``: per
        node, up to which index its log must hold the committed entries (a member's whole log
        once converged; a removed node's up to its commit index, since nobody replicates to it
        any more and an uncommitted tail may stay behind there forever).
        """
        committed = self.committed
        for node, entries in logs.items():
            limit = min(len(committed), settled[node])
            for e in entries:
                if e.index > limit:
                    break
                term, etype, data = committed[e.index - 1]
                if (e.term, e.type, e.data) != (term, etype, data):
                    raise Violation(f"{node} holds {e.index}/{e.term} where /{term} was committed")
        names = list(logs)
        for i, a in enumerate(names):
            by_index = {e.index: e for e in logs[a]}
            for b in names[i + 1 :]:
                common = [e for e in logs[b] if e.index in by_index]
                match = max((k for k, e in enumerate(common)
                             if by_index[e.index].term == e.term), default=-1)
                for e in common[: match + 1]:
                    if by_index[e.index] != e:
                        raise Violation(f"{a} and {b} agree at {common[match].index} but differ "
                                        f"at {e.index}")
