"""The linearizability checker on hand-built histories, and on simulated ones of known verdict.

Hand-built histories pin down each rule of the register model (reads, writes, deletes,
compare-and-set, unknown outcomes, revisions). Simulated histories come from a register that
really is linearizable: each operation takes effect at a random instant inside its interval,
so the checker must accept them all, and must reject them once one read is made stale.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.linearizability import (
    CAS,
    DELETE,
    GET,
    SET,
    Budget,
    Op,
    Verdict,
    check,
    check_key,
    check_revisions,
    dump_history,
    load_history,
    minimize,
    truncate,
)

K = "k"


def get(call: float, ret: float, value: str | None, revision: int = 0, client: int = 0) -> Op:
    """A read: ``value`` None means the key was absent."""
    if value is None:
        return Op(client, K, GET, call, ret, found=False)
    return Op(client, K, GET, call, ret, value=value, found=True, revision=revision)


def put(call: float, ret: float | None, value: str, revision: int | None, client: int = 0) -> Op:
    """A set; ``ret`` None: it raised, outcome unknown."""
    return Op(client, K, SET, call, ret, value=value, revision=revision)


def delete(call: float, ret: float | None, found: bool | None, client: int = 0) -> Op:
    return Op(client, K, DELETE, call, ret, found=found)


def cas(
    call: float,
    ret: float | None,
    expected: int,
    value: str,
    *,
    ok: bool = True,
    revision: int | None = None,
    client: int = 0,
) -> Op:
    return Op(client, K, CAS, call, ret, value=value, expected=expected, ok=ok, revision=revision)


def verdict(*ops: Op) -> Verdict:
    return check(ops).verdict


# -- plain reads and writes ----------------------------------------------------------------------


def test_empty_history_and_read_of_a_fresh_key() -> None:
    assert verdict() == Verdict.OK
    assert verdict(get(0, 1, None)) == Verdict.OK


def test_sequential_writes_and_reads() -> None:
    assert (
        verdict(put(0, 1, "a", 1), get(2, 3, "a", 1), put(4, 5, "b", 2), get(6, 7, "b", 2))
        == Verdict.OK
    )


def test_stale_read_is_illegal() -> None:
    result = check([put(0, 1, "a", 1), put(2, 3, "b", 2), get(4, 5, "a", 1)])
    assert result.verdict == Verdict.ILLEGAL
    (key,) = result.keys
    assert key.stuck[-1].kind == GET  # the stale read is what cannot be placed
    assert "cannot be linearized" in key.explain() or "none of these" in key.explain()


def test_lost_acknowledged_write_is_illegal() -> None:
    assert verdict(put(0, 1, "a", 1), get(2, 3, None)) == Verdict.ILLEGAL


def test_read_of_a_value_never_written_is_illegal() -> None:
    assert verdict(put(0, 1, "a", 1), get(2, 3, "zzz", 1)) == Verdict.ILLEGAL
    assert verdict(get(0, 1, "ghost", 4)) == Verdict.ILLEGAL


def test_read_with_the_wrong_revision_is_illegal() -> None:
    assert verdict(put(0, 1, "a", 3), get(2, 3, "a", 4)) == Verdict.ILLEGAL


def test_concurrent_overlap_is_fine() -> None:
    # The write of b overlaps both reads: the first may see a, the second b...
    assert (
        verdict(put(0, 1, "a", 1), put(2, 10, "b", 2, client=1), get(3, 4, "a", 1), get(5, 6, "b", 2))
        == Verdict.OK
    )
    # ...or both b; and a read may see the write before the write returns.
    assert verdict(put(0, 10, "b", 2, client=1), get(3, 4, "b", 2)) == Verdict.OK


def test_new_then_old_read_is_illegal_even_while_the_write_runs() -> None:
    # Once a read returned b, a later read cannot go back to a (no time travel).
    assert (
        verdict(put(0, 1, "a", 1), put(2, 10, "b", 2, client=1), get(3, 4, "b", 2), get(5, 6, "a", 1))
        == Verdict.ILLEGAL
    )


def test_concurrent_writes_may_take_effect_in_either_order() -> None:
    writes = (put(0, 5, "a", 2, client=1), put(0, 5, "b", 1, client=2))
    assert verdict(*writes, get(6, 7, "a", 2)) == Verdict.OK
    # Revisions fix the order: b (rev 1) came first, so a final read of b is a lost write.
    assert verdict(*writes, get(6, 7, "b", 1)) == Verdict.ILLEGAL


def test_write_revisions_must_grow() -> None:
    assert verdict(put(0, 1, "a", 5), put(2, 3, "b", 3)) == Verdict.ILLEGAL


# -- unknown outcomes ----------------------------------------------------------------------------


def test_unknown_outcome_write_observed_later() -> None:
    assert verdict(put(0, 1, "a", 1), put(2, None, "x", None), get(50, 51, "x", 9)) == Verdict.OK


def test_unknown_outcome_write_never_applied() -> None:
    assert verdict(put(0, 1, "a", 1), put(2, None, "x", None), get(50, 51, "a", 1)) == Verdict.OK


def test_unknown_outcome_write_cannot_be_undone() -> None:
    # Once a read saw x, x was applied; a later read of the older value is a violation.
    ops = (put(0, 1, "a", 1), put(2, None, "x", None), get(3, 4, "x", 9), get(5, 6, "a", 1))
    assert verdict(*ops) == Verdict.ILLEGAL


def test_unknown_outcome_write_cannot_act_before_its_invocation() -> None:
    assert verdict(get(0, 1, "x", 9), put(2, None, "x", None)) == Verdict.ILLEGAL


def test_unknown_outcome_revision_is_pinned_by_the_first_read() -> None:
    ops = (put(0, None, "x", None), get(1, 2, "x", 9), get(3, 4, "x", 10))
    assert verdict(*ops) == Verdict.ILLEGAL
    assert verdict(*ops[:2], get(3, 4, "x", 9)) == Verdict.OK


def test_unknown_outcome_delete() -> None:
    assert verdict(put(0, 1, "a", 1), delete(2, None, None), get(3, 4, None)) == Verdict.OK
    assert verdict(put(0, 1, "a", 1), delete(2, None, None), get(3, 4, "a", 1)) == Verdict.OK
    ops = (put(0, 1, "a", 1), delete(2, None, None), get(3, 4, None), get(5, 6, "a", 1))
    assert verdict(*ops) == Verdict.ILLEGAL


# -- deletes -------------------------------------------------------------------------------------


def test_delete_semantics() -> None:
    assert verdict(put(0, 1, "a", 1), delete(2, 3, True), get(4, 5, None)) == Verdict.OK
    assert verdict(put(0, 1, "a", 1), delete(2, 3, False)) == Verdict.ILLEGAL
    assert verdict(delete(0, 1, True)) == Verdict.ILLEGAL
    assert verdict(put(0, 1, "a", 1), delete(2, 3, True), get(4, 5, "a", 1)) == Verdict.ILLEGAL


def test_two_deletes_cannot_both_find_the_key() -> None:
    ops = (put(0, 1, "a", 1), delete(2, 5, True, client=1), delete(2, 5, True, client=2))
    assert verdict(*ops) == Verdict.ILLEGAL
    assert verdict(*ops[:2], delete(2, 5, False, client=2)) == Verdict.OK


# -- compare-and-set -----------------------------------------------------------------------------


def test_cas_succeeds_on_the_current_revision() -> None:
    ops = (put(0, 1, "a", 1), cas(2, 3, 1, "b", revision=2), get(4, 5, "b", 2))
    assert verdict(*ops) == Verdict.OK


def test_cas_with_a_stale_revision_cannot_succeed() -> None:
    ops = (put(0, 1, "a", 1), put(2, 3, "b", 2), cas(4, 5, 1, "c", revision=3))
    assert verdict(*ops) == Verdict.ILLEGAL


def test_cas_failure_needs_a_mismatch() -> None:
    assert verdict(put(0, 1, "a", 1), cas(2, 3, 1, "c", ok=False, revision=1)) == Verdict.ILLEGAL
    assert verdict(put(0, 1, "a", 1), cas(2, 3, 7, "c", ok=False, revision=1)) == Verdict.OK
    assert verdict(put(0, 1, "a", 1), cas(2, 3, 7, "c", ok=False)) == Verdict.OK  # unreported


def test_cas_failure_reports_the_current_revision() -> None:
    assert verdict(put(0, 1, "a", 1), cas(2, 3, 7, "c", ok=False, revision=4)) == Verdict.ILLEGAL


def test_cas_zero_means_absent() -> None:
    assert verdict(cas(0, 1, 0, "a", revision=1), get(2, 3, "a", 1)) == Verdict.OK
    assert verdict(put(0, 1, "a", 1), cas(2, 3, 0, "b", revision=2)) == Verdict.ILLEGAL
    assert verdict(put(0, 1, "a", 1), cas(2, 3, 0, "b", ok=False, revision=1)) == Verdict.OK


def test_concurrent_cas_on_one_revision_only_one_wins() -> None:
    both = (
        put(0, 1, "a", 1),
        cas(2, 5, 1, "b", revision=2, client=1),
        cas(2, 5, 1, "c", revision=3, client=2),
    )
    assert verdict(*both) == Verdict.ILLEGAL
    one = (*both[:2], cas(2, 5, 1, "c", ok=False, revision=2, client=2))
    assert verdict(*one) == Verdict.OK


def test_cas_on_an_unknown_outcome_write() -> None:
    # x may have been applied (revision pinned by the cas) or not; either explains the rest.
    base = (put(0, 1, "a", 1), put(2, None, "x", None))
    assert verdict(*base, cas(3, 4, 9, "y", revision=10), get(5, 6, "y", 10)) == Verdict.OK
    assert verdict(*base, cas(3, 4, 1, "y", revision=10), get(5, 6, "y", 10)) == Verdict.OK
    # A failed cas reporting x's revision pins it, and a read must then agree.
    failed = cas(3, 4, 1, "y", ok=False, revision=7)
    assert verdict(*base, failed, get(5, 6, "x", 7)) == Verdict.OK
    assert verdict(*base, failed, get(5, 6, "x", 8)) == Verdict.ILLEGAL


def test_unknown_outcome_cas_may_or_may_not_match() -> None:
    base = (put(0, 1, "a", 1), put(2, None, "x", None), cas(3, None, 5, "y"))
    assert verdict(*base, get(10, 11, "y", 6)) == Verdict.OK
    assert verdict(*base, get(10, 11, "x", 5)) == Verdict.OK
    assert verdict(*base, get(10, 11, "a", 1)) == Verdict.OK
    # y can only have been written if the revision was 5, so x with revision 4 then y is wrong.
    assert verdict(*base, get(10, 11, "x", 4), get(12, 13, "y", 6)) == Verdict.ILLEGAL


# -- across keys ---------------------------------------------------------------------------------


def test_keys_are_checked_independently() -> None:
    ops = [
        Op(0, "a", SET, 0, 1, value="1", revision=1),
        Op(0, "b", SET, 2, 3, value="2", revision=2),
        Op(1, "a", GET, 4, 5, value="1", found=True, revision=1),
        Op(1, "b", GET, 6, 7, found=False),
    ]
    result = check(ops)
    assert result.verdict == Verdict.ILLEGAL
    assert [(r.key, r.verdict) for r in result.keys] == [("a", Verdict.OK), ("b", Verdict.ILLEGAL)]


def test_revision_order_across_keys() -> None:
    first = Op(0, "a", SET, 0, 1, value="1", revision=5)
    assert check_revisions([first, Op(0, "b", SET, 2, 3, value="2", revision=6)]) == []
    problems = check_revisions([first, Op(0, "b", SET, 2, 3, value="2", revision=4)])
    assert len(problems) == 1 and "not higher" in problems[0]
    duplicate = check_revisions([first, Op(1, "b", SET, 0, 1, value="2", revision=5)])
    assert any("two acknowledged writes" in p for p in duplicate)
    # Concurrent writes may take revisions in either order.
    assert check_revisions([first, Op(1, "b", SET, 0.5, 3, value="2", revision=4)]) == []


# -- budget, shrinking, files --------------------------------------------------------------------


def test_exhausted_budget_is_unknown() -> None:
    ops = simulate(random.Random(1), clients=4, count=60)
    result = check_key(K, ops, Budget(max_steps=5))
    assert result.verdict == Verdict.UNKNOWN


def test_minimize_keeps_a_genuine_violation() -> None:
    rng = random.Random(7)
    ops = simulate(rng, clients=3, count=80)
    stale = make_stale(ops)
    assert check_key(K, stale).verdict == Verdict.ILLEGAL
    small = minimize(stale)
    assert len(small) < len(stale)
    assert check_key(K, small).verdict == Verdict.ILLEGAL
    with pytest.raises(ValueError):
        minimize(ops)


@pytest.mark.parametrize("seed", range(5))
def test_truncation_keeps_a_linearizable_history_linearizable(seed: int) -> None:
    rng = random.Random(seed)
    ops = simulate(rng, clients=4, count=100)
    for end in sorted(rng.sample([op.call for op in ops], 10)):
        assert check(truncate(ops, end)).verdict == Verdict.OK


def test_minimize_truncates_after_the_violation() -> None:
    ops = simulate(random.Random(3), clients=8, count=1500)
    small = minimize(make_stale(ops))
    assert len(small) < 100
    assert check_key(K, small).verdict == Verdict.ILLEGAL


def test_history_round_trips_through_json(tmp_path: Path) -> None:
    ops = [put(0, 1, "a", 1), put(2, None, "x", None), cas(3, 4, 1, "b", ok=False, revision=2)]
    dump_history(ops, tmp_path / "h.json")
    assert load_history(tmp_path / "h.json") == ops


def test_malformed_operations_are_refused() -> None:
    with pytest.raises(ValueError):
        Op(0, K, GET, 0, None, found=True)  # a read that raised is not part of a history
    with pytest.raises(ValueError):
        Op(0, K, SET, 0, 1, value="a")  # acknowledged without a revision
    with pytest.raises(ValueError):
        Op(0, K, "incr", 0, 1)


# -- simulated histories -------------------------------------------------------------------------


def simulate(rng: random.Random, *, clients: int, count: int, unknown: float = 0.1) -> list[Op]:
    """A history of a truly linearizable register: each op takes effect at a random instant
    inside its interval. An unknown-outcome write takes effect before its client's next
    acknowledged write returns, or never; with no such write (the client's last ones), at any
    later instant, or never. That is what the chaos recorder knows of rafty's sessions."""
    requests: list[dict[str, Any]] = []
    clock = [0.0] * clients
    for n in range(count):
        c = rng.randrange(clients)
        call = clock[c] + rng.uniform(0, 1)
        ret = call + rng.uniform(0.01, 3)
        clock[c] = ret
        kind = rng.choice((GET, GET, SET, SET, CAS, DELETE))
        lost = kind != GET and rng.random() < unknown
        request: dict[str, Any] = {"client": c, "kind": kind, "call": call, "ret": ret}
        if lost:
            request.update(ret=None, real_ret=ret)
        if kind in (SET, CAS):
            request["value"] = f"v{n}"
        if kind == CAS:
            request["expected"] = rng.choice((0, 1, 2, n // 2, n))  # fixed below when it hits
        requests.append(request)
    settled: dict[int, float | None] = dict.fromkeys(range(clients))
    for r in reversed(requests):  # each client's next acknowledged write settles its losses
        if r["ret"] is None:
            r["deadline"] = settled[r["client"]]
        elif r["kind"] != GET:
            settled[r["client"]] = r["ret"]
    pending: list[tuple[float, int, dict[str, Any]]] = []  # (effect time, order, request)
    for n, r in enumerate(requests):
        if r["ret"] is not None:
            effect = rng.uniform(r["call"], r["ret"])
        elif rng.random() < 0.5:
            effect = float("inf")  # never applied
        else:
            effect = rng.uniform(r["call"], r["deadline"] or r.pop("real_ret") + 20)
        r.pop("real_ret", None)
        pending.append((effect, n, r))
    # Apply in effect order to a real register, filling in each op's outcome.
    exists, value, revision, counter = False, None, 0, 0
    ops: list[Op] = []
    for effect, _, r in sorted(pending, key=lambda p: p[:2]):
        kind, unknown_outcome = r["kind"], r["ret"] is None
        if effect == float("inf"):
            ops.append(_op(r))
            continue
        if kind == GET:
            ops.append(_op(r, found=exists, value=value, revision=revision if exists else None))
        elif kind == SET:
            counter += 1
            exists, value, revision = True, r["value"], counter
            ops.append(_op(r, revision=None if unknown_outcome else counter))
        elif kind == DELETE:
            found = exists
            if exists:
                counter += 1
            exists, value, revision = False, None, 0
            ops.append(_op(r, found=None if unknown_outcome else found))
        else:
            current = revision if exists else 0
            if rng.random() < 0.5:
                r["expected"] = current  # make about half of them match
            if r["expected"] == current:
                counter += 1
                exists, value, revision = True, r["value"], counter
                ops.append(_op(r, ok=True, revision=None if unknown_outcome else counter))
            else:
                ops.append(_op(r, ok=False, revision=None if unknown_outcome else current))
    return ops


def _op(request: dict[str, object], **outcome: object) -> Op:
    fields = {k: v for k, v in request.items()}
    fields.update(outcome)
    if fields["ret"] is None:  # only writes lose their outcome
        fields.update(found=None, revision=None, ok=True)
    return Op(key=K, **fields)  # type: ignore[arg-type]


def _revision(op: Op) -> int:
    return op.revision or 0


def make_stale(ops: list[Op]) -> list[Op]:
    """``ops`` with the first read that can be made stale returning an overwritten value.

    A read invoked after a write w returned cannot see a value whose revision is below w's.
    """
    acked = sorted((op for op in ops if op.kind == SET and not op.unknown), key=_revision)
    oldest = acked[0]
    for read in sorted((op for op in ops if op.kind == GET), key=lambda op: op.call):
        if any(w is not oldest and (w.ret or 0.0) < read.call for w in acked):
            stale = dataclasses.replace(
                read, found=True, value=oldest.value, revision=oldest.revision
            )
            return [stale if op is read else op for op in ops]
    raise AssertionError("the simulation left no read after two acknowledged writes")


@pytest.mark.parametrize("seed", range(30))
def test_simulated_linearizable_histories_pass(seed: int) -> None:
    rng = random.Random(seed)
    ops = simulate(rng, clients=rng.choice((2, 4, 6)), count=rng.choice((20, 100, 300)))
    result = check(ops)
    assert result.verdict == Verdict.OK, result.explain()


@pytest.mark.parametrize("seed", range(10))
def test_simulated_histories_with_a_stale_read_fail(seed: int) -> None:
    rng = random.Random(seed)
    ops = simulate(rng, clients=4, count=200, unknown=0.0)
    assert check(ops).verdict == Verdict.OK
    assert check(make_stale(ops)).verdict == Verdict.ILLEGAL


def test_a_long_busy_history_is_decided() -> None:
    """The size a chaos key reaches (a few hundred ops, many clients, some unknown outcomes)."""
    ops = simulate(random.Random(99), clients=8, count=1500, unknown=0.05)
    result = check(ops)
    assert result.verdict == Verdict.OK, result.explain()


def test_unknown_outcome_with_a_deadline() -> None:
    # Settled before t=3: applied by then, or never.
    late = put(0, None, "x", None)
    late = Op(late.client, K, SET, 0, None, value="x", deadline=3)
    assert verdict(put(0, 1, "a", 1), late, get(4, 5, "x", 7), get(6, 7, "x", 7)) == Verdict.OK
    assert verdict(put(0, 1, "a", 1), late, get(4, 5, "a", 1)) == Verdict.OK
    # Not applied by t=3 (a read at 4 saw a), so it can never appear afterwards.
    ops = (put(0, 1, "a", 1), late, get(4, 5, "a", 1), get(6, 7, "x", 7))
    assert verdict(*ops) == Verdict.ILLEGAL
