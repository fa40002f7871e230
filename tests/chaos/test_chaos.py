"""Chaos on real processes: five raftd nodes, concurrent clients, a nemesis, then the verdict.

The run lasts ``CHAOS_DURATION`` seconds (30 in ``make test``; ``make chaos DURATION=S`` for
longer). Clients read, write, delete and compare-and-set a few keys while the nemesis kills,
pauses, isolates and partitions nodes (see nemesis.py). Then everything is healed, every key is
read, and the whole history must be linearizable with no acknowledged write lost. A history
the checker cannot decide within its budget fails too.

Network faults need network namespaces (CAP_NET_ADMIN). Where they cannot be created, the
network faults alone are left out: `test_partition_nemesis_available` is skipped with the
reason, the chaos test warns and records it, and the process faults still run on 127.0.0.1.
Likewise for netem (delay and loss), which some kernels lack.

Artifacts (history, fault log, summary, node logs) go to a new ``run-*`` directory under
``CHAOS_ARTIFACTS`` if set, else to the test's temp dir; a failure names the directory.
``CHAOS_SEED`` replays a fault schedule and workload (the timing of real processes still
differs from run to run).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftctl import AsyncClient
from raftctl.errors import RaftctlError
from raftctl.localcluster import HOST, free_ports
from raftd.config import LOOPBACK_DATAGRAM_BYTES
from tests.chaos import netns
from tests.chaos.cluster import ChaosCluster
from tests.chaos.linearizability import (
    Budget,
    CheckResult,
    Verdict,
    check,
    dump_history,
    minimize,
)
from tests.chaos.nemesis import Nemesis
from tests.chaos.workload import (
    KeySpace,
    Recorder,
    WorkloadConfig,
    final_reads,
    lost_writes,
    run_clients,
)

DURATION = float(os.environ.get("CHAOS_DURATION", "30"))
SEED = int(os.environ.get("CHAOS_SEED") or random.randrange(2**32))
NODES = 5
NODE_PORT = 7001
"""Every node has its own address in namespace mode, so they can share one port."""
HEAL_DEADLINE = 120.0
"""Generous: how long the healed cluster may take to answer again."""
CHECK_BUDGET = Budget(max_steps=20_000_000, max_seconds=300.0)

pytestmark = pytest.mark.timeout(int(DURATION) + 900)


@dataclass
class ChaosEnv:
    cluster: ChaosCluster
    network: netns.Network | None
    network_reason: str | None
    netem_reason: str | None
    artifacts: Path


@pytest.fixture(scope="module")
def network_support() -> tuple[str | None, str | None]:
    """(why namespaces cannot be used, why netem cannot be): None where they can."""
    reason = netns.probe()
    return reason, reason if reason is not None else netns.netem_reason()


def test_partition_nemesis_available(network_support: tuple[str | None, str | None]) -> None:
    """Reports, as a skip with its reason, when the partition nemesis cannot run here."""
    reason, _ = network_support
    if reason is not None:
        pytest.skip(f"partition nemesis skipped: {reason}")


def test_delay_and_loss_nemesis_available(
    network_support: tuple[str | None, str | None],
) -> None:
    """Reports, as a skip with its reason, when the netem (delay, loss) nemesis cannot run."""
    _, reason = network_support
    if reason is not None:
        pytest.skip(f"delay/loss nemesis skipped: {reason}")


@pytest.fixture
def chaos_env(
    tmp_path: Path, network_support: tuple[str | None, str | None]
) -> Iterator[ChaosEnv]:
    """Five configured nodes, in namespaces where possible; everything removed at teardown."""
    reason, netem_reason = network_support
    root = os.environ.get("CHAOS_ARTIFACTS")
    if root:
        # A fresh directory per run: nodes started on an earlier run's data dirs would begin
        # with keys that this run's history knows nothing of.
        Path(root).mkdir(parents=True, exist_ok=True)
        artifacts = Path(tempfile.mkdtemp(prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=root))
    else:
        artifacts = tmp_path / "artifacts"
        artifacts.mkdir()
    network: netns.Network | None = None
    if reason is None:
        network = netns.Network(NODES, netem=netem_reason is None)
        try:
            network.create()
        except netns.NetnsError as exc:
            # The probe made namespaces here: this is our setup failing, not the machine.
            leftovers = network.destroy()
            pytest.fail(f"namespace setup failed where the probe succeeded: {exc}"
                        + (f" (left: {leftovers})" if leftovers else ""))
    if reason is not None:
        netem_reason = netem_reason or reason
        message = f"chaos: partition nemesis skipped, nodes run on {HOST}: {reason}"
        print(message)
        warnings.warn(message, stacklevel=1)
    if network is not None:
        addresses = [f"{network.address(i)}:{NODE_PORT}" for i in range(NODES)]
        cluster = ChaosCluster(artifacts / "cluster", addresses, raft={},
                               prefix=network.exec_prefix)
    else:
        addresses = [f"{HOST}:{port}" for port in free_ports(NODES)]
        raft = {"max_datagram_bytes": LOOPBACK_DATAGRAM_BYTES}
        cluster = ChaosCluster(artifacts / "cluster", addresses, raft=raft)
    try:
        yield ChaosEnv(cluster, network, reason, netem_reason, artifacts)
    finally:
        try:
            cluster.stop_all()
        finally:
            if network is not None:
                leftovers = network.destroy()
                assert not leftovers, f"could not remove: {leftovers}"


def test_chaos(chaos_env: ChaosEnv, record_property: Callable[[str, object], None]) -> None:
    env = chaos_env
    cluster = env.cluster
    print(f"\nchaos: seed {SEED}, {DURATION:g}s, artifacts in {env.artifacts}")
    record_property("chaos_seed", SEED)
    if env.network_reason is not None:
        record_property("partition_nemesis_skipped", env.network_reason)
    if env.netem_reason is not None:
        record_property("netem_nemesis_skipped", env.netem_reason)
    cluster.start_all()
    asyncio.run(_wait_healthy(cluster.endpoints))

    rng = random.Random(SEED)
    nemesis = Nemesis(
        cluster,
        env.network,
        rng,
        env.artifacts / "faults.log",
        network_reason=env.network_reason,
        netem_reason=env.netem_reason,
    )
    config = WorkloadConfig()
    keys = KeySpace(f"chaos-{SEED}", config.slots, config.ops_per_key)
    recorder = Recorder()
    stop = threading.Event()
    failure: list[BaseException] = []
    started = time.monotonic()
    until = started + DURATION

    def nemesis_thread() -> None:
        try:
            nemesis.run(stop, until)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread below
            failure.append(exc)

    thread = threading.Thread(target=nemesis_thread, name="nemesis")
    thread.start()
    try:
        asyncio.run(run_clients(cluster.endpoints, keys, recorder, config, until=until, seed=SEED))
    finally:
        stop.set()
        thread.join()
        nemesis.heal_all()
    chaos_seconds = time.monotonic() - started
    if failure:
        raise failure[0]

    asyncio.run(_wait_healthy(cluster.endpoints))
    finals = asyncio.run(final_reads(cluster.endpoints, keys, recorder, timeout=HEAL_DEADLINE))
    history = recorder.history()
    dump_history(history, env.artifacts / "history.json")
    result = check(history, CHECK_BUDGET)
    lost = lost_writes(history, finals)
    summary = {
        "seed": SEED,
        "chaos_seconds": round(chaos_seconds, 1),
        "operations_checked": result.ops,
        "keys": len(keys.keys),
        "outcomes": dict(sorted(recorder.outcomes.items())),
        "client_errors": dict(sorted(recorder.errors.items())),
        "faults": dict(sorted(nemesis.counts.items())),
        "faults_compound": nemesis.compound,
        "faults_skipped": nemesis.skipped,
        "acknowledged_writes_lost": len(lost),
        "linearizability": str(result.verdict),
        "check_seconds": round(result.seconds, 1),
        "check_steps_max": max((k.steps for k in result.keys), default=0),
        "nodes": "network namespaces" if env.network is not None else HOST,
    }
    (env.artifacts / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("chaos summary: " + json.dumps(summary))

    where = f"(artifacts, node logs and fault log in {env.artifacts})"
    assert not lost, f"acknowledged writes lost {where}:\n" + "\n".join(lost)
    if result.verdict == Verdict.ILLEGAL:
        _save_witnesses(result, env.artifacts)
    assert result.verdict == Verdict.OK, f"{result.explain()}\n{where}"
    assert recorder.outcomes["set ok"] > 0 and recorder.outcomes["get ok"] > 0, summary


async def _wait_healthy(endpoints: list[str]) -> None:
    """Until the cluster commits (a leader, a quorum); the client retries up to the deadline."""
    async with AsyncClient(endpoints, timeout=HEAL_DEADLINE) as client:
        try:
            await client.health()
        except RaftctlError as exc:
            raise AssertionError(f"the cluster did not recover within {HEAL_DEADLINE:g}s: {exc}")


def _save_witnesses(result: CheckResult, artifacts: Path) -> None:
    """Write a minimized witness of every violating key beside the history."""
    for index, key_result in enumerate(result.keys):
        if key_result.verdict == Verdict.ILLEGAL:
            witness = minimize(key_result.ops, CHECK_BUDGET)
            dump_history(witness, artifacts / f"violation-{index}.json")
            print(f"minimized witness for {key_result.key!r}: {artifacts}/violation-{index}.json")
