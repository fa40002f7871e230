"""DictStateMachine: sessions give exactly-once writes; revisions make compare-and-set safe."""

from __future__ import annotations

from raftd.statemachine import DELETE, SET, DictStateMachine, encode_batch, encode_command


def apply(sm: DictStateMachine, *commands: bytes, ts: int = 1000) -> list[dict]:
    return sm.apply_batch(encode_batch(ts, list(commands)))


def write(key: str, value: object, seq: int, first_unacked: int, client: str = "c1") -> bytes:
    return encode_command(SET, key, value, client_id=client, seq=seq,
                          first_unacked_seq=first_unacked)


def test_retry_of_a_write_whose_reply_was_lost_is_applied_once() -> None:
    sm = DictStateMachine()
    first = apply(sm, write("k", 1, seq=1, first_unacked=1))
    retried = apply(sm, write("k", 1, seq=1, first_unacked=1))
    assert retried == first
    assert sm.revision == 1


def test_retry_after_a_later_seq_was_applied_is_answered_from_the_cache() -> None:
    sm = DictStateMachine()
    apply(sm, write("counter", "a", seq=1, first_unacked=1))
    r2 = apply(sm, write("counter", "b", seq=2, first_unacked=1))  # reply to seq 1 was lost
    r1_retry = apply(sm, write("counter", "a", seq=1, first_unacked=1))
    assert r1_retry == [{"revision": 1}]
    assert sm.get("counter") == (True, "b", r2[0]["revision"])  # the retry changed nothing


def test_acknowledged_seqs_are_forgotten_and_then_refused() -> None:
    sm = DictStateMachine()
    apply(sm, write("k", 1, seq=1, first_unacked=1))
    apply(sm, write("k", 2, seq=2, first_unacked=2))  # the client saw seq 1's reply
    assert 1 not in sm.sessions["c1"].results
    [res] = apply(sm, write("k", 1, seq=1, first_unacked=1))
    assert res["error"] == "session_expired"
    assert sm.get("k")[1] == 2


def test_sessions_expire_by_leader_time_not_local_clocks() -> None:
    sm = DictStateMachine(session_ttl_ms=10_000)
    apply(sm, write("k", 1, seq=1, first_unacked=1), ts=1_000)
    apply(sm, write("other", 1, seq=1, first_unacked=1, client="c2"), ts=20_000)
    assert "c1" not in sm.sessions and "c2" in sm.sessions
    [res] = apply(sm, write("k", 2, seq=2, first_unacked=2), ts=20_001)
    assert res["error"] == "session_expired"


def test_leader_time_never_goes_backwards() -> None:
    sm = DictStateMachine(session_ttl_ms=10_000)
    apply(sm, write("k", 1, seq=1, first_unacked=1), ts=50_000)
    apply(sm, write("x", 1, seq=1, first_unacked=1, client="c2"), ts=1_000)  # lagging clock
    assert sm.clock_ms == 50_000 and "c1" in sm.sessions


def test_every_write_gets_its_own_revision_even_within_one_entry() -> None:
    sm = DictStateMachine()
    results = apply(sm, encode_command(SET, "k", 1), encode_command(SET, "k", 2))
    assert [r["revision"] for r in results] == [1, 2]
    [stale_cas] = apply(sm, encode_command(SET, "k", 3, if_revision=1))
    assert stale_cas["error"] == "condition_failed" and stale_cas["revision"] == 2
    [ok_cas] = apply(sm, encode_command(SET, "k", 3, if_revision=2))
    assert ok_cas == {"revision": 3}


def test_if_absent_and_delete() -> None:
    sm = DictStateMachine()
    assert apply(sm, encode_command(SET, "k", 1, if_absent=True)) == [{"revision": 1}]
    [again] = apply(sm, encode_command(SET, "k", 2, if_absent=True))
    assert again["error"] == "condition_failed"
    assert apply(sm, encode_command(DELETE, "k")) == [{"found": True, "revision": 2}]
    assert apply(sm, encode_command(DELETE, "k")) == [{"found": False}]


def test_same_entries_give_the_same_digest() -> None:
    a, b = DictStateMachine(), DictStateMachine()
    batch = encode_batch(5, [encode_command(SET, f"k{i}", i) for i in range(50)])
    a.apply_batch(batch)
    b.apply_batch(batch)
    assert a.digest() == b.digest()
    b.apply_batch(encode_batch(6, [encode_command(DELETE, "k1")]))
    assert a.digest() != b.digest()


def test_list_pages_in_key_order() -> None:
    sm = DictStateMachine()
    apply(sm, *[encode_command(SET, f"p/{i:02}", i) for i in range(5)], encode_command(SET, "q", 0))
    items, more = sm.list("p/", None, 2)
    assert [k for k, _, _ in items] == ["p/00", "p/01"] and more
    items, more = sm.list("p/", "p/03", 10)
    assert [k for k, _, _ in items] == ["p/04"] and not more


def test_list_pages_end_past_the_byte_budget_but_never_empty() -> None:
    sm = DictStateMachine()
    apply(sm, *[encode_command(SET, f"big/{i}", bytes(3000)) for i in range(4)],
          encode_command(SET, "big/5", {"nested": [bytes(3000)]}))
    items, more = sm.list("big/", None, 100, max_bytes=7000)
    assert [k for k, _, _ in items] == ["big/0", "big/1"] and more
    items, more = sm.list("big/", "big/3", 100, max_bytes=100)
    assert [k for k, _, _ in items] == ["big/5"] and not more  # alone past the budget


def test_snapshot_round_trip_keeps_data_revisions_and_sessions() -> None:
    sm = DictStateMachine()
    apply(sm, *[encode_command(SET, f"k{i}", {"n": i}) for i in range(25_000)])
    apply(sm, write("s", b"\x00bytes", seq=1, first_unacked=1))
    blob = b"".join(sm.capture().chunks())
    copy = DictStateMachine()
    copy.restore(blob)
    assert copy.digest() == sm.digest()
    assert copy.revision == sm.revision and copy.clock_ms == sm.clock_ms
    retried = apply(copy, write("s", b"\x00bytes", seq=1, first_unacked=1))
    assert retried == [{"revision": sm.revision}]


def test_capture_is_unaffected_by_later_writes() -> None:
    sm = DictStateMachine()
    apply(sm, encode_command(SET, "k", 1))
    cap = sm.capture()
    apply(sm, encode_command(SET, "k", 2), encode_command(SET, "new", 3))
    copy = DictStateMachine()
    copy.restore(b"".join(cap.chunks()))
    assert copy.get("k") == (True, 1, 1) and copy.get("new")[0] is False


def test_forged_entries_are_skipped_alike_everywhere_not_fatal() -> None:
    import msgpack

    sm = DictStateMachine()
    assert sm.apply_batch(b"\x01\xc1garbage") == []
    forged = encode_batch(5, [msgpack.packb(("not", "a", "command")), encode_command(SET, "k", 1)])
    results = sm.apply_batch(forged)
    assert results[0]["error"] == "bad_request" and results[1] == {"revision": 1}


def test_snapshot_verification_refuses_garbage_and_accepts_real_ones() -> None:
    import pytest

    sm = DictStateMachine()
    apply(sm, encode_command(SET, "k", 1))
    DictStateMachine.verify_snapshot(b"".join(sm.capture().chunks()))
    for bad in (b"", b"\xc1", b"\x81\xa1v\x09", b"".join(sm.capture().chunks())[:-3]):
        with pytest.raises(ValueError):
            DictStateMachine.verify_snapshot(bad)
