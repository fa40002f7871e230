"""Prints how fast the simulation ran (``make sim`` reports seeds per hour)."""

from __future__ import annotations

from typing import Any

from tests.sim.test_sim import SWEEP, WORKERS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SWEEP:
        seeds, seconds = int(SWEEP["seeds"]), SWEEP["seconds"]
        terminalreporter.write_line(
            f"simulation: {seeds} seeds in {seconds:.0f} s on {WORKERS} processes: "
            f"{seeds / seconds * 3600:,.0f} seeds per hour"
        )
