"""Acknowledged writes survive a crash of every node at once (fsync on).

SIGKILL leaves the page cache intact, so these tests cannot see a missing fsync; they catch
writes acknowledged before they were stored by a majority, and recovery that loses or
misreads what is on disk.
"""

from __future__ import annotations

import asyncio
import itertools

from raftctl import AsyncClient, RaftctlError
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    DEADLINE,
    POLL,
    diagnostic,
    freeze,
    kill_all_at_once,
    missing_or_wrong,
    read_all,
    thaw,
    wait_for_leader,
)

WRITERS = 48
KILL_AFTER_ACKS = 1000
CRASHES = 3
FREEZE_ATTEMPTS = 5


async def leader_has_uncommitted_entries(endpoint: str) -> None:
    """Wait until the leader holds entries past its commit index."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        diag = await asyncio.to_thread(diagnostic, endpoint)
        log = diag["log"] if diag is not None else None
        if log is not None and log["lastLogIndex"] > log["commitIndex"]:
            return
        assert loop.time() < deadline, f"the leader appended no uncommitted entries: {diag}"
        await asyncio.sleep(POLL)


async def freeze_all_but_the_leader(cluster: LocalCluster) -> int:
    """SIGSTOP every node but the leader, resolved just before (leadership may have moved
    under load); returns it. If it no longer leads once the others are frozen, they are
    thawed and the leader resolved again."""
    for _ in range(FREEZE_ATTEMPTS):
        leader = await asyncio.to_thread(wait_for_leader, cluster)
        others = [i for i in range(len(cluster)) if i != leader]
        for i in others:
            freeze(cluster, i)
        diag = await asyncio.to_thread(diagnostic, cluster.endpoints[leader], 5.0)
        if diag is not None and diag["status"] == "leader":
            return leader
        for i in others:
            thaw(cluster, i)
    raise AssertionError(f"no leader still led once the others were frozen, {FREEZE_ATTEMPTS} "
                         "times in a row")


async def write_until_killed(
    cluster: LocalCluster, crash: int, *, freeze_followers: bool
) -> tuple[dict[str, str], int]:
    """Run WRITERS concurrent writers of unique keys; once KILL_AFTER_ACKS writes were
    acknowledged, SIGKILL every node with the other writes in flight, and return the
    acknowledged ones and the leader at the crash. ``freeze_followers``: first SIGSTOP both
    followers and wait until the leader holds entries no follower can have stored (none of
    them may be acknowledged)."""
    acked: dict[str, str] = {}
    loop = asyncio.get_running_loop()

    async def writer(client: AsyncClient, w: int) -> None:
        for j in itertools.count():
            key, value = f"c{crash}-w{w:02d}-{j:05d}", f"value-{crash}-{w}-{j}"
            await client.set(key, value)
            acked[key] = value

    async with AsyncClient(cluster.endpoints, timeout=DEADLINE) as client:
        tasks = [loop.create_task(writer(client, w)) for w in range(WRITERS)]
        deadline = loop.time() + DEADLINE
        while len(acked) < KILL_AFTER_ACKS:
            assert loop.time() < deadline, f"only {len(acked)} writes acknowledged"
            for task in tasks:
                if task.done():
                    task.result()  # a writer failed before the crash: raise its error
            await asyncio.sleep(POLL)
        if freeze_followers:
            leader = await freeze_all_but_the_leader(cluster)
            await leader_has_uncommitted_entries(cluster.endpoints[leader])
        else:  # resolved now: leadership may have moved during the writes
            leader = await asyncio.to_thread(wait_for_leader, cluster)
        kill_all_at_once(cluster)
        in_flight = sum(not task.done() for task in tasks)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert in_flight == WRITERS, "every writer should have had a write in flight at the crash"
    assert all(isinstance(r, asyncio.CancelledError | RaftctlError) for r in results), results
    return dict(acked), leader


def restart_followers_first(cluster: LocalCluster, leader: int) -> None:
    """Restart the followers and let them elect a leader before the old leader returns, so
    entries that only the old leader stored are overwritten."""
    followers = [i for i in range(len(cluster)) if i != leader]
    for i in followers:
        cluster.start(i)
    wait_for_leader(cluster, followers)
    cluster.start(leader)
    wait_for_leader(cluster)


def assert_readable(cluster: LocalCluster, acked: dict[str, str]) -> None:
    after = read_all(cluster.endpoints, acked)
    lost = missing_or_wrong(acked, after)
    assert lost == {}, f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. " \
                       f"{dict(itertools.islice(lost.items(), 5))}"


def test_acknowledged_writes_survive_crash_of_all_nodes(cluster3: LocalCluster) -> None:
    """Regression for "acknowledged writes lost when all nodes crashed": every write the
    cluster acknowledged before all three nodes were SIGKILLed mid-load is readable, with its
    value, after they restart (followers first). Repeated, so that recovered logs (torn tails
    included) are crashed again."""
    cluster = cluster3
    acked: dict[str, str] = {}
    for crash in range(CRASHES):
        wait_for_leader(cluster)
        done, leader = asyncio.run(write_until_killed(cluster, crash, freeze_followers=False))
        acked |= done
        restart_followers_first(cluster, leader)
    assert_readable(cluster, acked)


def test_writes_only_the_leader_stored_were_not_acknowledged(cluster3: LocalCluster) -> None:
    """With both followers frozen, the leader appends writes it must not acknowledge; all
    nodes are SIGKILLed and the followers elect a leader without the old one: every write
    that was acknowledged is still readable."""
    cluster = cluster3
    wait_for_leader(cluster)
    acked, leader = asyncio.run(write_until_killed(cluster, 0, freeze_followers=True))
    restart_followers_first(cluster, leader)
    assert_readable(cluster, acked)
