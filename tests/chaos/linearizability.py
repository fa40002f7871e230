"""A linearizability checker for rafty key-value histories (Wing & Gong, Lowe; as Porcupine).

Theory of operation:

- A history is a list of `Op`s: what a client asked (get, set, delete, compare-and-set on one
  key), when it was invoked and when it completed (monotonic seconds), and what came back. A
  write that finally raised has ``ret=None``: it may have taken effect at any moment after its
  invocation, or never (DESIGN.md: "a write that finally raised may or may not have been
  applied"). Reads that raised tell nothing and are left out of histories.
- P-compositionality (Herlihy & Wing): a history is linearizable iff its sub-history on every
  key is, so each key is searched on its own. Small searches instead of one exponential one.
- The model of one key is a register with a revision: ``(exists, value, revision, floor)``.
  Revisions come from a cluster-wide counter, so a key's next revision cannot be predicted, but
  in any true linearization a key's writes carry increasing revisions: ``floor`` is the largest
  revision of a write linearized so far, and the next write must exceed it. A write whose
  outcome is unknown leaves ``revision=None`` (some number above ``floor``); the first read or
  failed compare-and-set that reports it pins it down. That makes the model nondeterministic
  (an unknown compare-and-set on an unknown revision may or may not match), so, as Porcupine
  does for nondeterministic models, the search runs over *sets* of model states.
- The search (Lowe's refinement of Wing & Gong): a doubly linked list of call and return
  entries in time order. Walking it, a call may be linearized next if the model accepts it; it
  is then lifted out of the list with its return, and the walk restarts. Reaching a return
  entry whose call is not yet linearized means the current prefix is a dead end: backtrack.
  A cache of (bitset of linearized ops, model states) prunes every configuration already seen,
  which is what makes the search practical. An unknown-outcome write is linearized anywhere
  in its window, either applied or as a no-op (never applied). Its window ends at infinity,
  or at its ``deadline`` when the recorder knows one: rafty's sessions refuse a write once a
  later write of the same session was applied (DESIGN.md, client sessions), so the next
  acknowledged write of that session settles it. Open-ended windows are what makes searches
  explode, since such a write can be placed at every later point.
- A search budget (steps and seconds) bounds the work; exhausting it gives ``UNKNOWN``, which
  the chaos test counts as a failure: histories must stay small enough to decide.
- A fast path first drops unknown-outcome writes whose value nobody ever read ("never
  applied" is always a permitted outcome, so a linearization of the reduced history is one of
  the full history); only if that fails is the full history searched.
- `check_revisions` adds a cross-key check the per-key model cannot make: acknowledged writes
  have distinct revisions, and a write invoked after another operation completed has a higher
  revision than any that operation saw (revisions grow with the log, the log with real time).
- `minimize` shrinks a non-linearizable history by *weakening* steps only (dropping reads,
  turning acknowledged writes into unknown-outcome ones), so what remains is still a genuine
  violation, never an artefact of the shrinking.

``python -m tests.chaos.linearizability HISTORY.json`` re-checks a saved history and prints a
minimized witness of every violation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

GET = "get"
SET = "set"
DELETE = "delete"
CAS = "cas"
KINDS = (GET, SET, DELETE, CAS)
WRITES = (SET, DELETE, CAS)


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on one key: the request, its time interval, and its outcome.

    ``call`` is taken before the request is sent and ``ret`` after the answer was received, so
    the recorded interval contains the real one. ``ret`` None: a write that raised, whose
    outcome is unknown; it took effect after ``call`` and before ``deadline``, or never
    (``deadline`` None: no bound is known). Fields by kind:

    - get: ``found``; when found, ``value`` and ``revision`` read.
    - set: ``value`` written; ``revision`` returned (None when the outcome is unknown).
    - delete: ``found`` returned (None when unknown).
    - cas: ``expected`` revision (0: the key must be absent), ``value`` to write; ``ok`` True
      with the new ``revision``, or ``ok`` False (condition failed) with the ``revision`` the
      server found (0: absent; None: not reported). When unknown, ``ok`` is ignored.

    Values must be hashable (the model keeps them in sets); the chaos workload writes strings.
    """

    client: int
    key: str
    kind: str
    call: float
    ret: float | None
    value: Any = None
    expected: int | None = None
    ok: bool = True
    found: bool | None = None
    revision: int | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.ret is None and self.kind == GET:
            raise ValueError("a read that raised tells nothing: leave it out of the history")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"operation returns before it is invoked: {self}")
        if self.deadline is not None and (self.ret is not None or self.deadline < self.call):
            raise ValueError(f"only an unknown outcome has a deadline, after the call: {self}")
        if self.kind == CAS and self.expected is None:
            raise ValueError("a compare-and-set needs its expected revision")
        if self.ret is not None:
            if self.kind in (GET, DELETE) and self.found is None:
                raise ValueError(f"a completed {self.kind} needs found: {self}")
            acknowledged = self.kind == SET or (self.kind == CAS and self.ok)
            if acknowledged and self.revision is None:
                raise ValueError(f"an acknowledged write needs its revision: {self}")
            if self.kind == GET and self.found and self.revision is None:
                raise ValueError(f"a read that found the key needs its revision: {self}")

    @property
    def unknown(self) -> bool:
        """The outcome is unknown: a write that raised."""
        return self.ret is None

    def describe(self) -> str:
        """One readable line, e.g. ``c3 [1.203, 1.310] set 'k'='v7' -> rev 17``."""
        end = f"{self.ret:.6f}" if self.ret is not None else "?"
        if self.deadline is not None:
            end = f"? <{self.deadline:.6f}"
        where = f"c{self.client} [{self.call:.6f}, {end}] {self.kind} {self.key!r}"
        if self.kind == GET:
            got = f"{self.value!r} rev {self.revision}" if self.found else "absent"
            return f"{where} -> {got}"
        if self.kind == DELETE:
            return f"{where} -> {'unknown' if self.unknown else f'found={self.found}'}"
        arg = f"={self.value!r}"
        if self.kind == CAS:
            arg = f" if rev {self.expected} then {self.value!r}"
        if self.unknown:
            return f"{where}{arg} -> unknown"
        if self.kind == CAS and not self.ok:
            return f"{where}{arg} -> condition failed (found rev {self.revision})"
        return f"{where}{arg} -> rev {self.revision}"


# -- the model -----------------------------------------------------------------------------------

State = tuple[bool, Any, int | None, int]
"""``(exists, value, revision, floor)``: revision None is unknown (some number above floor)."""

INITIAL: State = (False, None, 0, 0)
"""A key nobody wrote: absent, revision 0 (the server reports 0 for an absent key)."""


def step(state: State, op: Op) -> tuple[State, ...]:
    """Every state the key can be in after ``op`` is applied to ``state`` (none: impossible).

    An unknown-outcome op may also leave the state as it is: "never applied" is then placed
    inside its window like any outcome (which matters once the window has a deadline).
    """
    if op.unknown:
        return (*_effect(state, op), state)
    return _effect(state, op)


def _revision(op: Op) -> int:
    """The revision a completed op reported (``Op.__post_init__`` made sure there is one)."""
    assert op.revision is not None
    return op.revision


def _effect(state: State, op: Op) -> tuple[State, ...]:
    exists, value, revision, floor = state
    # The key's current revision as a compare-and-set sees it: 0 when absent, None if unknown.
    current = revision if exists else 0
    if op.kind == GET:
        if not op.found:
            return () if exists else (state,)
        if not exists or value != op.value:
            return ()
        read = _revision(op)
        if revision is None:  # the read pins the revision of an unknown-outcome write down
            return ((True, value, read, read),) if read > floor else ()
        return (state,) if revision == read else ()
    if op.kind == SET:
        if op.unknown:
            return ((True, op.value, None, floor),)
        written = _revision(op)
        return ((True, op.value, written, written),) if written > floor else ()
    if op.kind == DELETE:
        gone: State = (False, None, 0, floor)
        if op.unknown:
            return (gone,) if exists else ()
        if op.found != exists:
            return ()
        return (gone,) if exists else (state,)
    # CAS
    expected = op.expected
    assert expected is not None  # __post_init__
    if op.unknown:
        maybe: State = (True, op.value, None, floor)
        if current is None:  # the unknown revision may or may not equal the expected one
            return (maybe,) if expected > floor else ()
        return (maybe,) if current == expected else ()
    if op.ok:
        if current is None:
            matches = expected > floor
        else:
            matches = current == expected
        new = _revision(op)
        if not matches or new <= max(floor, expected):
            return ()
        return ((True, op.value, new, new),)
    found = op.revision
    if current is None:
        if found is None:
            return (state,)
        if found == expected or found <= floor:
            return ()
        return ((True, value, found, found),)
    if current == expected or (found is not None and found != current):
        return ()
    return (state,)


# -- the search ----------------------------------------------------------------------------------


class Verdict(StrEnum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Budget:
    """How much search one key may use; past it the verdict is UNKNOWN."""

    max_steps: int = 5_000_000
    max_seconds: float = 120.0


@dataclass(slots=True)
class KeyResult:
    """The verdict on one key's sub-history, with the evidence of a violation."""

    key: str
    verdict: Verdict
    ops: list[Op]
    steps: int = 0
    seconds: float = 0.0
    longest: list[Op] = field(default_factory=list)
    """ILLEGAL: the longest linearized prefix the search found."""
    stuck: list[Op] = field(default_factory=list)
    """ILLEGAL: after ``longest``, the ops that could have come next, none of which the model
    accepts; the last one is the earliest-returning op still pending (it had to be next)."""

    def explain(self) -> str:
        lines = [f"key {self.key!r}: {self.verdict} ({len(self.ops)} ops, {self.steps} steps)"]
        if self.verdict == Verdict.ILLEGAL:
            lines.append("  longest linearizable prefix (in linearization order):")
            lines += [f"    {op.describe()}" for op in self.longest]
            lines.append("  then none of these can be linearized:")
            lines += [f"    {op.describe()}" for op in self.stuck]
        return "\n".join(lines)


@dataclass(slots=True)
class CheckResult:
    """The verdict on a whole history: ILLEGAL if any key (or the revision order) is."""

    verdict: Verdict
    keys: list[KeyResult]
    revision_problems: list[str]
    ops: int
    seconds: float

    def explain(self) -> str:
        lines = [f"{self.verdict}: {self.ops} ops on {len(self.keys)} keys in {self.seconds:.2f}s"]
        lines += [r.explain() for r in self.keys if r.verdict != Verdict.OK]
        lines += [f"revision order: {p}" for p in self.revision_problems]
        return "\n".join(lines)


class _Entry:
    """A call or return entry of the doubly linked list the search walks."""

    __slots__ = ("index", "is_call", "match", "next", "prev")

    def __init__(self, index: int, is_call: bool) -> None:
        self.index = index
        self.is_call = is_call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build_list(ops: Sequence[Op]) -> _Entry:
    """The head sentinel of the time-ordered entry list; an unknown op returns at its deadline
    (infinity without one).

    At equal times calls sort before returns: such operations count as concurrent, which can
    only accept more histories (never a false violation).
    """
    events: list[tuple[float, int, int, _Entry]] = []
    for i, op in enumerate(ops):
        call, ret = _Entry(i, True), _Entry(i, False)
        call.match = ret
        events.append((op.call, 0, i, call))
        events.append((_end(op), 1, i, ret))
    events.sort(key=lambda e: e[:3])
    head = _Entry(-1, False)
    prev = head
    for *_, entry in events:
        prev.next = entry
        entry.prev = prev
        prev = entry
    return head


def _end(op: Op) -> float:
    """Where an op's return entry goes: its return, deadline, or infinity."""
    if op.ret is not None:
        return op.ret
    return op.deadline if op.deadline is not None else math.inf


def _lift(entry: _Entry) -> None:
    """Unlink a call entry and its return (its op is now linearized)."""
    assert entry.prev is not None and entry.next is not None and entry.match is not None
    entry.prev.next = entry.next
    entry.next.prev = entry.prev
    match = entry.match
    assert match.prev is not None
    match.prev.next = match.next
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    """Undo `_lift` (backtracking): relink the return, then the call."""
    match = entry.match
    assert match is not None and match.prev is not None
    match.prev.next = match
    if match.next is not None:
        match.next.prev = match
    assert entry.prev is not None and entry.next is not None
    entry.prev.next = entry
    entry.next.prev = entry


def _apply(states: frozenset[State], op: Op) -> frozenset[State]:
    return frozenset(s for state in states for s in step(state, op))


def check_key(
    key: str,
    ops: Sequence[Op],
    budget: Budget = Budget(),
    initial: State = INITIAL,
) -> KeyResult:
    """Search for a linearization of one key's operations (see the module docstring)."""
    ops = list(ops)
    started = time.monotonic()
    deadline = started + budget.max_seconds
    head = _build_list(ops)
    states = frozenset((initial,))
    linearized = 0  # bitset of op indexes
    seen: dict[int, list[frozenset[State]]] = {}
    calls: list[tuple[_Entry, frozenset[State]]] = []
    longest: list[int] = []
    stuck: list[int] = []
    steps = 0
    entry = head.next
    while head.next is not None:
        steps += 1
        if steps > budget.max_steps or (steps % 4096 == 0 and time.monotonic() > deadline):
            return KeyResult(key, Verdict.UNKNOWN, ops, steps, time.monotonic() - started)
        assert entry is not None
        if entry.is_call:
            after = _apply(states, ops[entry.index])
            if after:
                bits = linearized | (1 << entry.index)
                if _novel(seen, bits, after):
                    calls.append((entry, states))
                    states, linearized = after, bits
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
            continue
        # A return whose call is not linearized: every call before it was tried. Dead end.
        if not stuck or len(calls) > len(longest):
            longest = [e.index for e, _ in calls]
            stuck = _pending(head, entry)
        if not calls:
            return KeyResult(
                key,
                Verdict.ILLEGAL,
                ops,
                steps,
                time.monotonic() - started,
                [ops[i] for i in longest],
                [ops[i] for i in stuck],
            )
        top, states = calls.pop()
        linearized &= ~(1 << top.index)
        _unlift(top)
        entry = top.next
    return KeyResult(key, Verdict.OK, ops, steps, time.monotonic() - started)


def _novel(seen: dict[int, list[frozenset[State]]], bits: int, states: frozenset[State]) -> bool:
    """Record (bits, states) unless a configuration with the same ops and a superset of these
    states was reached before: anything that works from ``states`` works from the superset,
    so exploring it again cannot find a linearization the other did not."""
    known = seen.setdefault(bits, [])
    if any(states <= other for other in known):
        return False
    known.append(states)
    return True


def _pending(head: _Entry, blocking: _Entry) -> list[int]:
    """The ops that could be linearized next: calls before ``blocking``, then its own op."""
    out: list[int] = []
    entry = head.next
    while entry is not None and entry is not blocking:
        if entry.is_call:
            out.append(entry.index)
        entry = entry.next
    if blocking.index not in out:
        out.append(blocking.index)
    return out


def _reduced(ops: Sequence[Op]) -> list[Op] | None:
    """``ops`` without the unknown-outcome writes nobody observed, or None if none qualify.

    Dropping such a write chooses "never applied", always a permitted outcome. It is skipped
    when a failed compare-and-set reports a revision no acknowledged write or read accounts
    for: that revision may belong to one of those writes.
    """
    read = {op.value for op in ops if op.kind == GET and op.found}
    known = {0} | {op.revision for op in ops if op.revision is not None and not _is_cas_failure(op)}
    if any(_is_cas_failure(op) and op.revision not in known | {None} for op in ops):
        return None
    kept = [
        op for op in ops if not (op.unknown and op.kind in (SET, CAS) and op.value not in read)
    ]
    return kept if len(kept) < len(ops) else None


def _is_cas_failure(op: Op) -> bool:
    return op.kind == CAS and not op.unknown and not op.ok


def check(history: Iterable[Op], budget: Budget = Budget()) -> CheckResult:
    """Check a whole history: every key's sub-history, and the cross-key revision order."""
    started = time.monotonic()
    by_key: dict[str, list[Op]] = defaultdict(list)
    count = 0
    for op in history:
        by_key[op.key].append(op)
        count += 1
    results: list[KeyResult] = []
    for key in sorted(by_key):
        ops = by_key[key]
        reduced = _reduced(ops)
        result = None
        if reduced is not None:
            quick = check_key(key, reduced, budget)
            if quick.verdict == Verdict.OK:
                result = quick
                result.ops = ops
        if result is None:
            result = check_key(key, ops, budget)
        results.append(result)
    problems = check_revisions([op for ops in by_key.values() for op in ops])
    if any(r.verdict == Verdict.ILLEGAL for r in results) or problems:
        verdict = Verdict.ILLEGAL
    elif any(r.verdict == Verdict.UNKNOWN for r in results):
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return CheckResult(verdict, results, problems, count, time.monotonic() - started)


def check_revisions(history: Iterable[Op]) -> list[str]:
    """Cross-key revision checks; returns the problems found (empty: none).

    Acknowledged writes carry distinct revisions, and an acknowledged write invoked after an
    operation completed carries a higher revision than any that operation saw or made.
    """
    history = list(history)
    problems: list[str] = []
    writes = [
        op for op in history if op.kind in (SET, CAS) and not op.unknown and op.ok
    ]
    by_revision: dict[int, Op] = {}
    for op in writes:
        assert op.revision is not None
        other = by_revision.setdefault(op.revision, op)
        if other is not op:
            problems.append(
                f"two acknowledged writes got revision {op.revision}: "
                f"{other.describe()} and {op.describe()}"
            )
    seen = sorted(
        (op for op in history if op.ret is not None and op.revision is not None),
        key=lambda op: op.ret or 0.0,
    )
    highest: Op | None = None
    j = 0
    for write in sorted(writes, key=lambda op: op.call):
        while j < len(seen) and (seen[j].ret or 0.0) < write.call:
            if highest is None or (seen[j].revision or 0) > (highest.revision or 0):
                highest = seen[j]
            j += 1
        if highest is not None and (write.revision or 0) <= (highest.revision or 0):
            problems.append(
                f"{write.describe()} was invoked after {highest.describe()} completed, "
                f"yet its revision is not higher"
            )
    return problems


# -- shrinking a violation -----------------------------------------------------------------------


def minimize(ops: Sequence[Op], budget: Budget = Budget()) -> list[Op]:
    """A smaller sub-history of one key that is still not linearizable.

    Only weakening steps are taken, each of which can only make a history easier to linearize,
    so the result is a genuine violation whenever ``ops`` is:

    1. truncation at the earliest time T that still fails (`truncate`);
    2. dropping reads and other ops that changed nothing;
    3. turning acknowledged writes into unknown-outcome ones settled by their return.

    Unknown-outcome writes stay: dropping one is not a weakening. Raises ValueError if ``ops``
    is linearizable. Fewer constraints can make a violation much harder to prove (the search
    must exhaust every ordering), so each candidate gets a modest budget, and one left
    undecided is not taken.
    """
    current = list(ops)
    if not current:
        raise ValueError("an empty history is linearizable")
    key = current[0].key
    first = check_key(key, current, budget)
    if first.verdict != Verdict.ILLEGAL:
        raise ValueError("the history is linearizable (or undecided): nothing to minimize")
    small = Budget(max_steps=max(100_000, 10 * first.steps), max_seconds=budget.max_seconds / 20)

    def illegal(candidate: list[Op]) -> bool:
        return check_key(key, candidate, small).verdict == Verdict.ILLEGAL

    times = sorted({op.call for op in current})
    low, high = 0, len(times) - 1  # truncating at times[high] still fails
    while low < high:
        middle = (low + high) // 2
        if illegal(truncate(current, times[middle])):
            high = middle
        else:
            low = middle + 1
    current = truncate(current, times[high])
    chunk = len(current)
    while chunk >= 1:  # drop observations in big chunks first, then one by one
        start = 0
        while start < len(current):
            window = current[start : start + chunk]
            kept = [op for op in window if not _observation(op)]
            candidate = current[:start] + kept + current[start + chunk :]
            if len(kept) < len(window) and illegal(candidate):
                current = candidate
                start += len(kept)
            else:
                start += chunk
        chunk //= 2
    for i, op in enumerate(current):
        if op.kind != GET and not op.unknown and not _is_cas_failure(op):
            candidate = current[:i] + [_forget_outcome(op)] + current[i + 1 :]
            if illegal(candidate):
                current = candidate
    return current


def truncate(ops: Iterable[Op], end: float) -> list[Op]:
    """The history as it stood at time ``end``: a weakening of ``ops``.

    Ops invoked later are gone; a write still running at ``end`` has an unknown outcome
    (settled by its return); an observation still running is dropped. Any linearization of
    ``ops``, cut at ``end`` with the later-linearized writes never applied, linearizes this.
    """
    out: list[Op] = []
    for op in ops:
        if op.call > end:
            continue
        if op.ret is not None and op.ret > end:
            if _observation(op):
                continue
            op = _forget_outcome(op)
        out.append(op)
    return out


def _forget_outcome(op: Op) -> Op:
    """An acknowledged write as one of unknown outcome, settled by the time it returned."""
    return dataclasses.replace(op, ret=None, deadline=op.ret, revision=None, found=None, ok=True)


def _observation(op: Op) -> bool:
    """An op that changed nothing and only constrains the history: dropping it weakens it."""
    return op.kind == GET or _is_cas_failure(op) or (op.kind == DELETE and op.found is False)


# -- histories on disk ---------------------------------------------------------------------------


def dump_history(ops: Iterable[Op], path: str | Path) -> None:
    """Write a history as JSON (one object per op), for `load_history` and bug reports."""
    rows = [dataclasses.asdict(op) for op in ops]
    Path(path).write_text(json.dumps(rows, indent=0) + "\n", encoding="utf-8")


def load_history(path: str | Path) -> list[Op]:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Op(**{k: _hashable(v) for k, v in row.items()}) for row in rows]


def _hashable(value: Any) -> Any:
    """JSON lists back as tuples, so values stay usable as model state."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.linearizability",
        description="Check a saved history; print a minimized witness of each violation.",
    )
    parser.add_argument("history", type=Path, help="JSON written by dump_history")
    parser.add_argument("--max-seconds", type=float, default=Budget().max_seconds)
    args = parser.parse_args(argv)
    budget = Budget(max_seconds=args.max_seconds)
    result = check(load_history(args.history), budget)
    print(result.explain())
    for key_result in result.keys:
        if key_result.verdict == Verdict.ILLEGAL:
            witness = minimize(key_result.ops, budget)
            print(f"\nminimized witness for key {key_result.key!r} ({len(witness)} ops):")
            for op in sorted(witness, key=lambda op: op.call):
                print(f"  {op.describe()}")
    return 0 if result.verdict == Verdict.OK else 1


if __name__ == "__main__":
    sys.exit(main())
