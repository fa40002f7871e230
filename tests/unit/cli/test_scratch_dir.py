"""scratch_dir: a failing demo or benchmark keeps the node logs its error message names."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftctl.localcluster import scratch_dir


class NamesTheLogs(Exception):
    pass


def test_removed_after_success_and_after_other_errors() -> None:
    with scratch_dir("rafty-test-", keep_on=(NamesTheLogs,)) as base:
        (base / "node1.log").write_text("fine")
    assert not base.exists()
    with pytest.raises(KeyError), scratch_dir("rafty-test-", keep_on=(NamesTheLogs,)) as base:
        raise KeyError("not ours to explain")
    assert not base.exists()


def test_kept_when_the_error_names_its_logs() -> None:
    kept: Path | None = None
    try:
        with pytest.raises(NamesTheLogs):
            with scratch_dir("rafty-test-", keep_on=(NamesTheLogs,)) as kept:
                (kept / "node1.log").write_text("why it failed")
                raise NamesTheLogs(f"see {kept}/node1.log")
        assert (kept / "node1.log").read_text() == "why it failed"
    finally:
        if kept is not None:
            for path in kept.iterdir():
                path.unlink()
            kept.rmdir()
