"""``--plot FILE.png``: pictures of a record (matplotlib, the optional extra ``rafty[plot]``).

matplotlib is imported only here and only when asked for, so raftctl itself stays light; a
missing matplotlib is a usage problem with a one-line fix, reported as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raftctl.bench.runner import BenchError

INSTALL_HINT = "--plot needs matplotlib: pip install 'rafty[plot]'"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never a window, works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(INSTALL_HINT) from None
    return plt


def require() -> None:
    """Fail before a long run, not after it, when plotting is impossible."""
    _pyplot()


def plot_load(record: dict[str, Any], path: Path) -> None:
    """Throughput and p50/p99 latency over time, one point per series interval."""
    plt = _pyplot()
    series = record["series"]
    t = [s["t"] for s in series]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    top.plot(t, [s["rps"] for s in series], marker=".")
    top.set_ylabel("requests/s")
    top.set_ylim(bottom=0)
    cfg = record["config"]
    top.set_title(f"raftctl bench {record['benchmark']}: {cfg['clients']} clients, "
                  f"{len(record['members'])} servers, fsync {'on' if record['fsync'] else 'off'}")
    bottom.plot(t, [s["p50_ms"] for s in series], marker=".", label="p50")
    bottom.plot(t, [s["p99_ms"] for s in series], marker=".", label="p99")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since start")
    bottom.set_ylim(bottom=0)
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_election(record: dict[str, Any], path: Path) -> None:
    """Cumulative distributions of election and failover times (the Raft paper's Figure 16)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, label in (("election_ms", "election (first candidacy to leader)"),
                        ("failover_ms", "failover (signal to a committed entry)")):
        samples = sorted(record["samples"][name])
        if samples:
            ys = [100 * (k + 1) / len(samples) for k in range(len(samples))]
            ax.step(samples, ys, where="post", label=label)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("cumulative percent")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.set_title(f"raftctl bench election: {record['servers']} servers, "
                 f"{record['completed']} trials, {record['signal']}")
    ax.legend(loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
