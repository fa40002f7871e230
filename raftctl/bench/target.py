"""The cluster under test: one started here (``--servers N``) or an existing one (``-e``).

Both give the same `Target`: member addresses, the leader, whether it fsyncs, and the PIDs of
members running on this machine, whose CPU the benchmark reads from /proc. For an existing
cluster the PIDs come from the owner of each member's listening socket, when this user may see
it (a remote cluster's CPU is simply unknown).

`LeaderWatch` polls every member during a run and counts leader changes: a benchmark that
provokes elections by load alone (missed heartbeats behind a long fsync or a busy loop)
reports them, and the target is zero.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from raftctl.bench.procstat import cpu_seconds, listening_pid
from raftctl.client import AsyncClient
from raftctl.connection import Credentials
from raftctl.errors import NoLeader, RaftctlError
from raftctl.localcluster import LocalCluster, scratch_dir
from raftctl.output.rows import StatusRow
from raftctl.survey import collect_status
from raftd.wire.client import parse_address

LEADER_WAIT_S = 20.0
WATCH_INTERVAL_S = 0.25
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(slots=True)
class Target:
    members: tuple[str, ...]
    leader: str
    fsync: bool | None
    pids: dict[str, int] = field(default_factory=dict)
    """Member address -> PID, for members running on this machine."""
    cluster: LocalCluster | None = None
    """Set when this benchmark started the cluster itself."""
    credentials: Credentials = field(default_factory=Credentials)
    """What its nodes require of clients (a token, TLS)."""

    @property
    def access(self) -> dict[str, Any]:
        """``credentials`` as the keyword arguments of a client."""
        return self.credentials.client_options()

    def cpu(self) -> dict[str, float] | None:
        """CPU seconds so far of every member; None unless all of them can be read here."""
        if len(self.pids) != len(self.members):
            return None
        out = {}
        for address, pid in self.pids.items():
            seconds = cpu_seconds(pid)
            if seconds is None:
                return None
            out[address] = seconds
        return out


def _leader_of(rows: list[StatusRow]) -> tuple[str | None, int]:
    """The leader in the highest term any member reports, and that term."""
    reachable = [r for r in rows if r.reachable and r.term is not None]
    top = max((r.term for r in reachable if r.term is not None), default=0)
    for row in reachable:
        if row.role == "leader" and row.term == top:
            return row.address, top
    return None, top


async def find_leader(
    endpoints: tuple[str, ...], timeout: float, **access: Any
) -> tuple[str, list[StatusRow]]:
    """The leader and the member rows, waiting up to LEADER_WAIT_S for an election.
    ``access``: the client's token and TLS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEADER_WAIT_S
    while True:
        rows = await collect_status(list(endpoints), timeout, **access)
        leader, _ = _leader_of(rows)
        if leader is not None:
            return leader, rows
        if loop.time() > deadline:
            raise NoLeader("no_leader", f"no leader among {', '.join(endpoints)}")
        await asyncio.sleep(0.1)


async def existing(
    endpoints: tuple[str, ...], timeout: float, credentials: Credentials = Credentials()
) -> Target:
    """Describe a running cluster reached through ``endpoints`` with ``credentials``."""
    access = credentials.client_options()
    leader, rows = await find_leader(endpoints, timeout, **access)
    async with AsyncClient([leader], timeout, **access) as client:
        fsync = (await client.diagnostic(leader)).get("fsync")
    members = tuple(r.address for r in rows)
    pids = {}
    for address in members:
        host, port = parse_address(address)
        pid = listening_pid(port) if host in LOCAL_HOSTS else None
        if pid is not None:
            pids[address] = pid
    return Target(members, leader, fsync if type(fsync) is bool else None, pids,
                  credentials=credentials)


class ClusterDidNotStart(RaftctlError):
    """The local cluster of a run elected no leader; the message names the node logs, and
    their directory is kept."""


@contextlib.contextmanager
def local_cluster(n: int, *, fsync: bool, timeout: float) -> Iterator[Target]:
    """Start ``n`` raftd processes in a temporary directory; stop them (by PID) afterwards."""
    with (scratch_dir("raftctl-bench-", keep_on=(ClusterDidNotStart,)) as base,
          LocalCluster(n, base, fsync=fsync) as cluster):
        cluster.start_all()
        try:
            cluster.wait_for_leader(LEADER_WAIT_S)
        except TimeoutError as exc:
            raise ClusterDidNotStart(str(exc)) from None
        target = asyncio.run(existing(tuple(cluster.endpoints), timeout))
        pids = {}
        for i, address in enumerate(cluster.endpoints):
            pid = cluster.pid(i)
            if pid is not None:
                pids[address] = pid
        target.pids = pids
        target.cluster = cluster
        yield target


class LeaderWatch:
    """Polls the members while a run lasts; counts changes of leader and of term."""

    def __init__(self, members: tuple[str, ...], timeout: float, **access: Any) -> None:
        self.members = members
        self.timeout = timeout
        self.access = access
        self.leaders: list[tuple[int, str]] = []
        """Each (term, leader) seen, in order, without repeats."""
        self.first_term: int | None = None
        self.last_term: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._poll()  # the state at the end counts too

    @property
    def leader_changes(self) -> int:
        return max(0, len(self.leaders) - 1)

    @property
    def term_changes(self) -> int | None:
        if self.first_term is None or self.last_term is None:
            return None
        return self.last_term - self.first_term

    async def _run(self) -> None:
        while True:
            await self._poll()
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _poll(self) -> None:
        try:
            rows = await collect_status(list(self.members), min(self.timeout, 1.0),
                                        **self.access)
        except RaftctlError:
            return
        leader, term = _leader_of(rows)
        if term:
            if self.first_term is None:
                self.first_term = term
            self.last_term = max(term, self.last_term or 0)
        if leader is not None and (not self.leaders or self.leaders[-1][1] != leader):
            self.leaders.append((term, leader))
