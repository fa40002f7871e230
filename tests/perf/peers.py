"""Peer comparison: rafty against etcd and PySyncObj, one system after the other, one run.

    make bench-peers        # or: .venv/bin/python -m tests.perf.peers [--seconds 10]
        [--clients 1,16,64,256] [--election-trials 200] [--json FILE] [--no-install]

Installs PySyncObj (pip, into this interpreter's environment) and etcd (the Debian package
``etcd-server``, as root) when they are missing. Every system runs as a 3-node cluster on
127.0.0.1 (free ports, temporary directories) and gets the same load design: C closed-loop
clients for N seconds at each C, 100-byte values, keys cycling per client.

Adapters (the load is not generated the same way everywhere, and the table says so):

- rafty: ``raftctl.bench`` workers, 2 processes separate from the cluster, one TCP
  connection and one session per client, to the leader;
- etcd: the same workers speaking HTTP/1.1 keep-alive to etcd's v3 gRPC gateway on the leader
  (``POST /v3/kv/put``, base64 JSON; ``tests.perf.peer_etcd``);
- PySyncObj: no client protocol, so the writers run inside its leader process as callback
  closed loops (``tests.perf.peer_pysyncobj``): an upper bound for PySyncObj, whose CPU figure
  includes its writers. It runs twice: with its default ``appendEntriesUseBatch`` (entries
  leave every 100 ms) and without (entries leave at once); rafty is paired with each.

Durability differs and decides the pairings: etcd always fsyncs, so it is compared with rafty
fsync on; PySyncObj never fsyncs, so it is compared with rafty fsync off. The cluster and the
load generator share this machine's cores (the table's header says how many and the load
average); read ratios, which come from the same run, rather than absolute figures.

Also measured in the same run: the disk's fsync p50 in the temporary directory and the
loopback TCP round trip (the 1-client target is the lower of 1,500 writes/s and 70% of
1 / (fsync p50 + 4 RTT)), and a 5-node rafty election benchmark. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console
from rich.table import Table

from raftctl.bench.election import run_election
from raftctl.bench.procstat import total_cpu
from raftctl.bench.results import Extras, summarize
from raftctl.bench.runner import BenchError, LoadSpec, run_load
from raftctl.bench.target import Target, local_cluster
from tests.perf.peer_etcd import EtcdCluster, etcd_version
from tests.perf.peer_pysyncobj import PySyncObjCluster

SIZE = 100
KEYS = 10_000
FSYNC_SAMPLES = 200
RTT_SAMPLES = 2000


@dataclass(slots=True)
class Row:
    system: str
    durability: str
    adapter: str
    clients: int
    record: dict[str, Any]
    pair: str = ""
    """The rafty configuration this system is compared with (empty for rafty itself)."""
    ratio: dict[str, float | None] = field(default_factory=dict)


# -- installs -----------------------------------------------------------------------------------

def ensure_pysyncobj(install: bool) -> bool:
    if importlib.util.find_spec("pysyncobj") is not None:
        return True
    if not install:
        return False
    print("installing PySyncObj (pip)", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pysyncobj"],
                          check=False)
    importlib.invalidate_caches()
    return done.returncode == 0 and importlib.util.find_spec("pysyncobj") is not None


def ensure_etcd(install: bool) -> bool:
    if shutil.which("etcd") is not None:
        return True
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("etcd is missing: install the Debian package etcd-server (as root)", file=sys.stderr)
        return False
    print("installing etcd (apt-get install etcd-server)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=False, env=env)
    return shutil.which("etcd") is not None


# -- the machine's own limits -------------------------------------------------------------------

def fsync_p50(directory: Path) -> float:
    """Median seconds of a 100-byte append + fsync in ``directory`` (what one WAL write costs)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        samples = []
        for _ in range(FSYNC_SAMPLES):
            os.write(fd, b"x" * SIZE)
            started = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples)


def loopback_rtt() -> float:
    """Median seconds of a 100-byte TCP ping-pong on 127.0.0.1 between two threads."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    samples = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(RTT_SAMPLES):
            started = time.perf_counter()
            sock.sendall(b"x" * SIZE)
            got = 0
            while got < SIZE:
                got += len(sock.recv(4096))
            samples.append(time.perf_counter() - started)
    thread.join(timeout=2)
    server.close()
    return statistics.median(samples)


# -- one system at a time -----------------------------------------------------------------------

def _spec(clients: int, seconds: float, protocol: str = "rafty") -> LoadSpec:
    return LoadSpec(clients=clients, workers=2, size=SIZE, keys=KEYS, duration=seconds,
                    interval=1.0, protocol=protocol)


def run_rafty(fsync: bool, levels: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    out = []
    with local_cluster(3, fsync=fsync, timeout=5.0) as target:
        for clients in levels:
            merged, extras = uvloop.run(run_load(_spec(clients, seconds), target))
            out.append(summarize(merged, extras))
            _progress(f"rafty fsync {'on' if fsync else 'off'}", clients, out[-1])
    return out


def run_etcd(levels: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as base, \
            EtcdCluster(Path(base)) as cluster:
        leader = cluster.wait_leader()
        target = Target(tuple(cluster.endpoints), leader, True, cluster.pids())
        for clients in levels:
            spec = _spec(clients, seconds, "tests.perf.peer_etcd:EtcdClient")
            merged, extras = uvloop.run(run_load(spec, target, watch=False))
            out.append(summarize(merged, extras))
            _progress("etcd", clients, out[-1])
    return out


def run_pysyncobj(levels: Sequence[int], seconds: float, *, batch: bool) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-pysyncobj-") as base, \
            PySyncObjCluster(Path(base), batch=batch) as cluster:
        leader = cluster.wait_leader()
        pids = list(cluster.pids().values())
        for clients in levels:
            before = total_cpu(pids)
            merged = cluster.run(leader, clients, seconds, SIZE, KEYS)
            after = total_cpu(pids)
            merged.cpu_seconds = None  # the writers are inside the cluster: counted there
            cpu = None if before is None or after is None else after - before
            out.append(summarize(merged, Extras(cluster_cpu_seconds=cpu,
                                                parent_cpu_seconds=None)))
            _progress(f"PySyncObj {'batch' if batch else 'immediate'}", clients, out[-1])
    return out


def _progress(name: str, clients: int, record: dict[str, Any]) -> None:
    print(f"  {name:<18} C={clients:<4} {record['throughput_rps']:>9,.0f} ops/s  "
          f"p50 {record['latency_ms']['p50']:.2f} ms  p99 {record['latency_ms']['p99']:.2f} ms",
          file=sys.stderr, flush=True)


# -- the table ----------------------------------------------------------------------------------

def _cpu_us(record: dict[str, Any]) -> str:
    per = record["cluster_cpu_s_per_1000"]
    return "?" if per is None else f"{per * 1000:,.0f}"


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def pair(rows: list[Row], rafty: dict[int, dict[str, Any]], peer: str, label: str) -> None:
    """Fill in rafty's ratio to ``peer`` at each client count: ops/s, p99 (lower is better)."""
    for row in rows:
        if row.system != peer:
            continue
        mine = rafty.get(row.clients)
        if mine is None:
            continue
        row.pair = label
        row.ratio = {
            "ops": _ratio(mine["throughput_rps"], row.record["throughput_rps"]),
            "p99": _ratio(mine["latency_ms"]["p99"], row.record["latency_ms"]["p99"]),
        }


def table(rows: list[Row], header: str) -> Table:
    t = Table(title=header, title_justify="left", box=None, header_style="bold",
              pad_edge=False, padding=(0, 1, 0, 0))
    for name in ("system", "durability", "C", "ops/s", "p50 ms", "p99 ms", "CPU µs/op",
                 "rafty vs it: ops/s", "p99"):
        t.add_column(name, justify="left" if name in ("system", "durability") else "right")
    for row in rows:
        r = row.record
        ops = row.ratio.get("ops")
        p99 = row.ratio.get("p99")
        t.add_row(row.system, row.durability, str(row.clients), f"{r['throughput_rps']:,.0f}",
                  f"{r['latency_ms']['p50']:.2f}", f"{r['latency_ms']['p99']:.2f}", _cpu_us(r),
                  "" if ops is None else f"{ops:.2f}x ({row.pair})",
                  "" if p99 is None else f"{p99:.2f}x")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.peers",
                                     description="rafty vs etcd vs PySyncObj on this machine")
    parser.add_argument("--seconds", type=float, default=10.0, help="per client count")
    parser.add_argument("--clients", default="1,16,64,256", help="client counts")
    parser.add_argument("--election-trials", type=int, default=200,
                        help="5-node election trials (0 skips)")
    parser.add_argument("--json", type=Path, help="also write every record here")
    parser.add_argument("--no-install", action="store_true",
                        help="skip systems that are missing instead of installing them")
    parser.add_argument("--systems", default="rafty,etcd,pysyncobj",
                        help="which systems to run (rafty always runs both fsync settings)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    systems = set(args.systems.split(","))
    have_etcd = "etcd" in systems and ensure_etcd(not args.no_install)
    have_pso = "pysyncobj" in systems and ensure_pysyncobj(not args.no_install)
    pso_version = "PySyncObj"
    if have_pso:
        from pysyncobj.version import VERSION

        pso_version = f"PySyncObj {VERSION}"
    etcd_name = etcd_version() or "etcd"

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as probe:
        disk = fsync_p50(Path(probe))
    rtt = loopback_rtt()
    load1 = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores shared by every cluster and its load generator; load average "
          f"{load1:.2f}; fsync p50 {disk * 1000:.2f} ms, loopback RTT p50 {rtt * 1e6:.0f} µs",
          file=sys.stderr, flush=True)

    rows: list[Row] = []
    results: dict[str, list[dict[str, Any]]] = {}
    results["rafty-fsync"] = run_rafty(True, levels, args.seconds)
    rows += [Row("rafty", "fsync", "bench workers, TCP", c, r)
             for c, r in zip(levels, results["rafty-fsync"], strict=True)]
    if have_etcd:
        results["etcd"] = run_etcd(levels, args.seconds)
        rows += [Row(etcd_name, "fsync", "bench workers, HTTP gateway", c, r)
                 for c, r in zip(levels, results["etcd"], strict=True)]
    results["rafty-nofsync"] = run_rafty(False, levels, args.seconds)
    rows += [Row("rafty", "no fsync", "bench workers, TCP", c, r)
             for c, r in zip(levels, results["rafty-nofsync"], strict=True)]
    pso_names = {True: f"{pso_version} batch", False: f"{pso_version} immediate"}
    if have_pso:
        for batch, name in pso_names.items():
            results[name] = run_pysyncobj(levels, args.seconds, batch=batch)
            rows += [Row(name, "RAM, no fsync", "writers inside the leader", c, r)
                     for c, r in zip(levels, results[name], strict=True)]
    by_c = {name: dict(zip(levels, recs, strict=True)) for name, recs in results.items()}
    pair(rows, by_c["rafty-fsync"], etcd_name, "fsync on")
    for name in pso_names.values():
        pair(rows, by_c["rafty-nofsync"], name, "fsync off")

    election, election_failed = None, False
    if args.election_trials > 0:
        print(f"  rafty election: 5 servers, {args.election_trials} trials", file=sys.stderr,
              flush=True)
        try:
            election = run_election(5, args.election_trials, sigstop=False, fsync=True,
                                    timeout=5.0)
        except BenchError as exc:  # the write table is still worth printing
            print(f"  rafty election failed: {exc}", file=sys.stderr, flush=True)
            election_failed = True

    console = Console(width=130)
    header = (f"make bench-peers: 3 nodes on 127.0.0.1, {SIZE}-byte values, "
              f"{args.seconds:g} s per point, {platform.python_version()}, {os.cpu_count()} "
              f"cores shared by cluster and load (load avg {load1:.2f} at start)")
    console.print(table(rows, header))
    console.print("adapters: rafty and etcd driven by the same raftctl.bench worker processes "
                  "(2, separate from the cluster; etcd through its v3 HTTP/JSON gateway); "
                  f"{pso_version} writers run inside its leader (an upper bound; its CPU "
                  "includes them), with its default appendEntriesUseBatch (batch: AppendEntries "
                  "every 100 ms) and without (immediate). CPU µs/op = cluster CPU-seconds / ops.")
    missing = [name for name, wanted, ran in (
        ("etcd (install the Debian package etcd-server, as root)", "etcd", have_etcd),
        ("PySyncObj (pip install pysyncobj)", "pysyncobj", have_pso),
    ) if wanted in systems and not ran]
    if missing:
        console.print(f"[bold red]not compared, missing here:[/] {'; '.join(missing)}")
    changes = sum(r.get("leader_changes") or 0
                  for name in ("rafty-fsync", "rafty-nofsync") for r in results[name])
    console.print(f"rafty leader changes during its write runs: {changes} (target 0)")
    target_1 = min(1500.0, 0.7 / (disk + 4 * rtt))
    console.print(f"1-client fsync-on target: {target_1:,.0f} writes/s (min of 1,500 and 70% of "
                  f"1/(fsync p50 {disk * 1000:.2f} ms + 4 x RTT {rtt * 1e6:.0f} µs))")
    if election is not None:
        for name in ("election_ms", "failover_ms"):
            s = election[name]
            shares = ", ".join(f"{100 * v:.1f}% < {k} ms" for k, v in s["share_under"].items())
            console.print(f"rafty 5-node {name[:-3]}: {s['count']} trials, p50 {s['p50']:.1f} ms, "
                          f"p90 {s['p90']:.1f}, p99 {s['p99']:.1f}, max {s['max']:.1f}; {shares}")
        pre, vote = election["prevote_round_ms"], election["vote_round_ms"]
        console.print(f"rafty 5-node winner's rounds: pre-vote p50 {pre['p50']:.1f} ms, p99 "
                      f"{pre['p99']:.1f}; vote (persists term and vote) p50 {vote['p50']:.1f} ms, "
                      f"p99 {vote['p99']:.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "fsync_p50_s": disk, "loopback_rtt_s": rtt, "load_average": load1,
            "rows": [{"system": r.system, "durability": r.durability, "adapter": r.adapter,
                      "clients": r.clients, "ratio": r.ratio, **r.record} for r in rows],
            "election": election,
        }, indent=2) + "\n")
    return 1 if election_failed else 0


if __name__ == "__main__":
    sys.exit(main())
