"""How benchmark records look: a rich table, tab-separated lines, or JSON; and the progress bar.

The record (a plain dict) is the single source: ``-o json`` prints it whole, the table and the
plain lines show its headline figures. Bench has its own rendering here rather than in
``raftctl.output.printers`` because its records are reports, not cluster data, and no other
verb shares their shape.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from raftctl.bench.runner import LoadSpec
from raftctl.output.printers import echo
from raftctl.output.rows import to_json

Record = dict[str, Any]


def _num(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _us_per_request(cpu_per_1000: float | None) -> str:
    return "unknown" if cpu_per_1000 is None else f"{cpu_per_1000 * 1000:,.0f} µs/request"


def load_rows(record: Record) -> list[tuple[str, str]]:
    """The headline figures of a write or read run, as (label, text)."""
    lat = record["latency_ms"]
    cfg = record["config"]
    what = record["benchmark"] + (f" ({cfg['consistency']})" if record["benchmark"] == "read"
                                  else "")
    first = record["first_error"]
    failed = [] if first is None else [("first error", _error_text(first))]
    return [
        ("benchmark", what),
        ("cluster", f"{len(record['members'])} members, fsync {_num(record['fsync'])}"),
        ("load", (f"{cfg['clients']} clients x pipeline {cfg['pipeline']}, "
                  f"{cfg['size']}-byte values, {cfg['workers']} workers")),
        ("requests", (f"{record['requests']:,} ({record['errors']:,} errors, "
                      f"{record['retries']:,} retries)")),
        *failed,
        ("duration", (f"{record['duration_s']:.2f} s (clients: avg "
                      f"{record['client_duration_avg_s']:.3f} s, stdev "
                      f"{record['client_duration_stdev_s']:.3f} s)")),
        ("throughput", (f"{record['throughput_rps']:,.0f} requests/s "
                        f"(cumulative {record['cumulative_rps']:,.0f}/s)")),
        ("avg time/request", f"{record['avg_request_ms']:.3f} ms"),
        ("latency", (f"p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
                     f"max {lat['max']:.2f} ms")),
        ("log entries", f"{record['log_mb']:.2f} MB"),
        ("cluster CPU", (f"{_num(record['cluster_cpu_s'], ' s', 2)}, "
                         f"{_num(record['cluster_cpu_s_per_1000'], ' s', 3)} per 1000 "
                         f"({_us_per_request(record['cluster_cpu_s_per_1000'])})")),
        ("load generator CPU", (f"{_num(record['loadgen_cpu_s'], ' s', 2)}, "
                                f"{_num(record['loadgen_cpu_s_per_1000'], ' s', 3)} per 1000")),
        ("leader changes", (f"{_num(record['leader_changes'])} (term changes "
                            f"{_num(record['term_changes'])})")),
    ]


def _error_text(error: dict[str, str]) -> str:
    code, message = error["code"], error["message"]
    return f"{code}: {message}" if message else code


def election_rows(record: Record) -> list[tuple[str, str]]:
    rows = [
        ("benchmark", f"election ({record['servers']} servers, {record['signal']})"),
        ("trials", f"{record['completed']} of {record['trials']} completed"),
    ]
    for name, label in (("election_ms", "election"), ("failover_ms", "failover")):
        s = record[name]
        rows.append((label, (f"p50 {s['p50']:.1f}  p90 {s['p90']:.1f}  p99 {s['p99']:.1f}  "
                             f"max {s['max']:.1f} ms")))
        shares = "  ".join(f"{100 * v:.0f}% < {k} ms" for k, v in s["share_under"].items())
        rows.append((f"{label} shares", shares))
    pre, vote = record["prevote_round_ms"], record["vote_round_ms"]
    rows.append(("winner's rounds", (f"pre-vote p50 {pre['p50']:.1f}  p99 {pre['p99']:.1f} ms, "
                                    f"vote p50 {vote['p50']:.1f}  p99 {vote['p99']:.1f} ms")))
    return rows


def emit(record: Record, fmt: str, console: Console) -> None:
    """Print ``record`` in format ``fmt`` (json, plain or table) on stdout."""
    if fmt == "json":
        echo(to_json(record))
        return
    rows = election_rows(record) if record["benchmark"] == "election" else load_rows(record)
    if fmt == "plain":
        for label, text in rows:
            echo(f"{label}\t{text}")
        return
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for label, text in rows:
        table.add_row(label, text)
    console.print(table)


@contextlib.contextmanager
def progress_bar(spec: LoadSpec, title: str) -> Iterator[Any]:
    """A live bar on stderr (only on a terminal); yields the runner's progress callback."""
    console = Console(stderr=True, markup=False, emoji=False, highlight=False)
    if not console.is_terminal:
        yield None
        return
    by_time = spec.entries is None
    total = float(spec.duration or 0) if by_time else float(spec.entries or 0)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn(), console=console, transient=True)
    started: list[float] = []  # the first report comes with the start signal
    with bar:
        task = bar.add_task(title, total=total, rate="")

        def update(done: int) -> None:
            if not started:
                started.append(time.monotonic())
            elapsed = time.monotonic() - started[0]
            rate = f"{done:,} requests, {done / elapsed:,.0f}/s" if elapsed > 0 else ""
            bar.update(task, completed=min(elapsed, total) if by_time else done, rate=rate)

        yield update
