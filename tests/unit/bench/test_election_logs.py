"""Election times from raftd's role-change log lines."""

from __future__ import annotations

from datetime import datetime

from raftctl.bench.election import Trial, election_time, parse_role_changes, summarize

LOG = """\
2026-01-02 03:04:05,100 INFO    raftd: raftd 127.0.0.1:7001 serving on 127.0.0.1:7001
2026-01-02 03:04:05,300 INFO    raftd.replica: role follower -> pre_candidate (term 4, leader unknown)
2026-01-02 03:04:05,302 INFO    raftd.replica: role pre_candidate -> candidate (term 5, leader unknown)
2026-01-02 03:04:05,311 INFO    raftd.replica: role candidate -> leader (term 5, leader 127.0.0.1:7001)
"""
OTHER = """\
2026-01-02 03:04:05,295 INFO    raftd.replica: role follower -> pre_candidate (term 4, leader unknown)
2026-01-02 03:04:05,305 INFO    raftd.replica: role pre_candidate -> follower (term 5, leader 127.0.0.1:7001)
"""


def _at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_role_lines_are_parsed_with_millisecond_times() -> None:
    changes = parse_role_changes(LOG)
    assert [(c.old, c.new, c.term) for c in changes] == [
        ("follower", "pre_candidate", 4), ("pre_candidate", "candidate", 5),
        ("candidate", "leader", 5),
    ]
    assert changes[0].at == _at("2026-01-02 03:04:05,300")


def test_election_runs_from_the_first_candidacy_anywhere_to_the_winner() -> None:
    changes = {"a": parse_role_changes(LOG), "b": parse_role_changes(OTHER)}
    took = election_time(changes, "a", since=_at("2026-01-02 03:04:05,200"))
    assert took is not None
    total, prevote, vote = took
    assert abs(total - 0.016) < 1e-6  # from b's candidacy at ,295 to a leading at ,311
    assert prevote is not None and abs(prevote - 0.002) < 1e-6
    assert vote is not None and abs(vote - 0.009) < 1e-6


def test_lines_before_the_kill_and_missing_lines_are_ignored() -> None:
    changes = {"a": parse_role_changes(LOG)}
    assert election_time(changes, "a", since=_at("2026-01-02 03:04:05,305")) is None
    assert election_time(changes, "b", since=0.0) is None


def test_summary_shares_and_percentiles() -> None:
    trials = [Trial(0.2 + k / 1000, 0.01 * (k + 1)) for k in range(10)] + [Trial(None, None)]
    record = summarize(trials, servers=5, signal_name="SIGKILL")
    assert record["trials"] == 11 and record["completed"] == 10
    assert record["election_ms"]["share_under"]["50"] == 0.4  # 10..40 ms
    assert record["election_ms"]["share_under"]["100"] == 0.9
    assert record["election_ms"]["p50"] == 50.0
    assert len(record["samples"]["failover_ms"]) == 10
    assert record["vote_round_ms"]["count"] == 0  # these trials carry no phase times
