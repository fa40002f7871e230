"""How failed requests show in a load run's record, and when a run fails instead of reporting.

The processes and the cluster are exercised in tests/integration/test_bench.py; here, the pure
parts: the first error across workers, its wire form, its table row, and the run's verdict.
"""

from __future__ import annotations

from typing import Any

import pytest

from raftctl.bench.histogram import Histogram
from raftctl.bench.report import load_rows
from raftctl.bench.results import ClientResult, Extras, WorkerResult, merge, summarize
from raftctl.bench.runner import RunFailed, require_success
from raftctl.bench.workers import FINAL_CODES
from raftd.wire.client import RETRYABLE_CODES, ErrorCode


def _worker(requests: int, errors: int, first_error: dict[str, Any] | None) -> WorkerResult:
    return WorkerResult(clients=[ClientResult(requests=requests, duration=1.0, errors=errors)],
                        latency=Histogram(), series=[], interval=1.0, cpu_seconds=None,
                        first_error=first_error)


def _record(summary: dict[str, Any]) -> dict[str, Any]:
    return {"benchmark": "write", "members": ["a"], "fsync": True,
            "config": {"clients": 1, "pipeline": 1, "size": 100, "workers": 1}, **summary}


def test_the_first_error_is_the_earliest_of_all_workers_and_survives_the_wire() -> None:
    late = {"code": "timeout", "message": "no answer", "t": 2.5}
    early = {"code": "no_leader", "message": "election in progress", "t": 0.5}
    parts = [_worker(10, 1, late), _worker(5, 0, None), _worker(7, 2, early)]
    wired = [WorkerResult.from_wire(p.to_wire()) for p in parts]
    summary = summarize(merge(wired), Extras())
    assert summary["first_error"] == {"code": "no_leader", "message": "election in progress"}
    assert summary["requests"] == 22 and summary["errors"] == 3
    rows = dict(load_rows(_record(summary)))
    assert rows["first error"] == "no_leader: election in progress"
    require_success(summary)  # some requests succeeded: the run reports


def test_a_run_without_errors_has_no_first_error_row() -> None:
    summary = summarize(merge([_worker(3, 0, None)]), Extras())
    assert summary["first_error"] is None
    assert "first error" not in dict(load_rows(_record(summary)))


@pytest.mark.parametrize(("first", "line", "timed_out"), [
    ({"code": "too_large", "message": "a value of 2000 bytes exceeds max_entry_bytes (1000)",
      "t": 0.1},
     "every request failed: too_large: a value of 2000 bytes exceeds max_entry_bytes (1000)",
     False),
    ({"code": "timeout", "message": "no answer within 5s after the end of the run", "t": 3.0},
     "every request failed: timeout: no answer within 5s after the end of the run", True),
    (None, "every request failed: timeout: no request was answered", True),
])
def test_a_run_in_which_no_request_succeeded_fails_with_the_first_error(
    first: dict[str, Any] | None, line: str, timed_out: bool
) -> None:
    summary = summarize(merge([_worker(0, 0 if first is None else 4, first)]), Extras())
    with pytest.raises(RunFailed) as caught:
        require_success(summary)
    assert str(caught.value) == line
    assert caught.value.timed_out is timed_out  # exit status 3 rather than 1


def test_an_unanswered_run_names_the_members_it_tried() -> None:
    """Exit status 3 comes with the endpoints tried, as for any raftctl request."""
    summary = summarize(merge([_worker(0, 2, {"code": "timeout", "message": "no answer within "
                                              "1s after the end of the run", "t": 1.0})]),
                        Extras())
    with pytest.raises(RunFailed) as caught:
        require_success({**_record(summary), "members": ["h:1", "h:2", "h:3"]})
    assert str(caught.value) == ("every request failed: timeout: no answer within 1s after the "
                                 "end of the run; endpoints tried: h:1, h:2, h:3")
    assert caught.value.timed_out


def test_a_refusal_crosses_processes_and_machines_intact() -> None:
    refusal = RunFailed("unauthorized", "this node requires a client token", every=False)
    again = RunFailed.from_wire(refusal.to_wire())
    assert str(again) == "a request failed: unauthorized: this node requires a client token"
    assert again.code == "unauthorized" and not again.timed_out
    # A refusal is its own reason: only a failure to answer names the endpoints.
    named = again.tried(("h:1", "h:2"))
    assert str(named) == str(again) and named.endpoints == ("h:1", "h:2")
    # A joiner's unanswered run reaches the head naming the members the joiner tried.
    unanswered = RunFailed("timeout", "no answer after 5s of retries", every=True).tried(("h:1",))
    again = RunFailed.from_wire(unanswered.to_wire())
    assert str(again) == ("every request failed: timeout: no answer after 5s of retries; "
                          "endpoints tried: h:1")
    assert again.tried(("h:9",)).endpoints == ("h:1",)


def test_final_codes_are_the_errors_no_retry_fixes() -> None:
    assert {"too_large", "bad_request", "unauthorized", "no_space"} <= FINAL_CODES
    assert not FINAL_CODES & RETRYABLE_CODES
    # The bench client reopens its session on the next write.
    assert ErrorCode.SESSION_EXPIRED.value not in FINAL_CODES
