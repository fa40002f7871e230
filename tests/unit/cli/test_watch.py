"""`status --watch` frames: what counts as a change, and what a frame shows."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from rich.console import Console

from raftctl.output.rows import StatusRow
from raftctl.output.watch import StatusWatch, changes

A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
NOW = datetime(2024, 1, 1, 12, 0, 0)


def row(address: str, role: str, term: int, leader: str | None, commit: int = 5) -> StatusRow:
    return StatusRow(address=address, role=role, term=term, leader=leader, commit_index=commit,
                     applied_index=commit, last_log_index=commit, lag=0, last_contact_ms=None,
                     reachable=True)


def down(address: str, error: str = "connection refused") -> StatusRow:
    return StatusRow(address=address, role=None, term=None, leader=None, commit_index=None,
                     applied_index=None, last_log_index=None, lag=None, last_contact_ms=None,
                     reachable=False, error=error)


STEADY = [row(A, "leader", 1, A), row(B, "follower", 1, A), row(C, "follower", 1, A)]


def test_nothing_changes_but_indexes() -> None:
    later = [dataclasses.replace(r, commit_index=9, applied_index=9) for r in STEADY]
    found = changes(STEADY, later)
    assert found.events == () and found.cells == frozenset()


def test_leader_change_term_bump_and_unreachable_member() -> None:
    after = [down(A), row(B, "leader", 2, B), row(C, "follower", 2, B)]
    found = changes(STEADY, after)
    assert found.events == (
        f"new leader {B} (was {A})",
        "term 1 -> 2",
        f"{A} unreachable: connection refused",
    )
    assert {(B, "ROLE"), (B, "TERM"), (B, "LEADER"), (C, "TERM"), (C, "LEADER"),
            (A, "ERROR")} <= found.cells
    assert (C, "ROLE") not in found.cells
    back = changes(after, [row(A, "follower", 2, B)] + after[1:])
    assert back.events == (f"{A} reachable again",)


def test_election_without_a_leader_yet_and_membership() -> None:
    electing = [row(A, "candidate", 2, None), row(B, "follower", 1, A), row(C, "follower", 1, A)]
    assert changes(STEADY, electing).events == (f"no leader (was {A})", "term 1 -> 2")
    grown = STEADY + [row("127.0.0.1:7004", "learner", 1, A)]
    assert changes(STEADY, grown).events == ("127.0.0.1:7004 joined",)
    assert changes(grown, STEADY).events == ("127.0.0.1:7004 left",)


def render(watch: StatusWatch, rows: list[StatusRow] | None, error: str | None = None) -> str:
    console = Console(width=100, record=True, color_system=None)
    console.print(watch.frame(rows, error, NOW))
    return console.export_text()


def test_frames_keep_the_recent_changes() -> None:
    watch = StatusWatch("Every 1s: raftctl status")
    first = render(watch, STEADY)
    assert "Every 1s: raftctl status    12:00:00" in first and "Changes:" not in first
    assert first.splitlines()[1].split()[:3] == ["ADDRESS", "ROLE", "TERM"]
    second = render(watch, [down(A), row(B, "leader", 2, B), row(C, "follower", 2, B)])
    assert f"12:00:00 new leader {B} (was {A})" in second
    assert "ERROR" in second and "connection refused" in second
    third = render(watch, None, "no node reachable (tried 127.0.0.1:7001)")
    assert "Error: no node reachable" in third and f"new leader {B}" in third
    render(watch, None, "no node reachable (tried 127.0.0.1:7001)")
    fourth = render(watch, STEADY)
    assert fourth.count("no node reachable") == 1  # logged once, not every frame
    assert f"new leader {A} (was {B})" in fourth
