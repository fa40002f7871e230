"""Ask every cluster member at once: the rows of ``raftctl status`` and ``raftctl health``.

Each member is asked directly (its own diagnostic or health check, never redirected), in
parallel, with one deadline. The member list comes from whichever node answers, the leader's
when it answers (it is the most recent). Members that do not answer become rows with the
reason, so one dead node never hides the others.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from raftctl.client import AsyncClient
from raftctl.errors import ClusterUnavailable, RaftctlError, RequestTimeout, ServerError
from raftctl.output.rows import HealthRow, StatusRow, status_row, unreachable_row
from raftd.wire.client import RETRYABLE_CODES

Diagnostic = Mapping[str, Any]
T = TypeVar("T")


async def _gather(
    ask: Callable[[str], Awaitable[T]], addresses: Iterable[str]
) -> dict[str, T | RaftctlError]:
    """``ask(address)`` for every address at once: its answer, or the error it raised."""
    addresses = list(addresses)
    answers = await asyncio.gather(*(ask(a) for a in addresses), return_exceptions=True)
    out: dict[str, T | RaftctlError] = {}
    for address, answer in zip(addresses, answers, strict=True):
        if isinstance(answer, BaseException) and not isinstance(answer, RaftctlError):
            raise answer
        out[address] = answer
    return out


def reason(err: RaftctlError) -> str:
    """A short cell text for a member that did not answer, e.g. "connection refused"."""
    if isinstance(err, RequestTimeout):
        return "timed out"
    if isinstance(err, ServerError):
        return err.code if not err.message else f"{err.code}: {err.message}"
    text = str(err)
    if isinstance(err, ClusterUnavailable):
        # Drop the "no node reachable (tried A): A: " framing; the row already names A.
        text = text.removeprefix(f"no node reachable (tried {', '.join(err.endpoints)})")
        text = text.removeprefix(": ")
        for endpoint in err.endpoints:
            text = text.removeprefix(f"{endpoint}: ")
    errno = re.match(r"\[Errno (\d+)\]", text)
    if errno:
        return os.strerror(int(errno.group(1))).lower()
    return text or "unreachable"


def no_answer(errors: Mapping[str, RaftctlError]) -> RaftctlError:
    """Why no endpoint gave a usable answer: the first final error a node answered with (e.g.
    unauthorized: the cluster is up but refuses us), else ClusterUnavailable naming them all.
    A passing condition (shutting_down, overloaded) stays "unreachable": exit 3, retry."""
    for err in errors.values():
        if isinstance(err, ServerError) and err.code not in RETRYABLE_CODES:
            return err
    detail = "; ".join(f"{address}: {reason(err)}" for address, err in errors.items())
    return ClusterUnavailable(list(errors), detail)


def _self_address(endpoint: str, diagnostic: Diagnostic) -> str:
    volatile = diagnostic.get("volatile")
    address = volatile.get("address") if isinstance(volatile, Mapping) else None
    return address if isinstance(address, str) and address else endpoint


def _members(answered: Mapping[str, Diagnostic]) -> list[str]:
    """The member list: from the leader if it answered (it is the most recent), else any."""
    ranked = sorted(answered.values(), key=lambda d: d.get("status") != "leader")
    for diagnostic in ranked:
        volatile = diagnostic.get("volatile")
        cluster = volatile.get("cluster") if isinstance(volatile, Mapping) else None
        if isinstance(cluster, list) and all(isinstance(m, str) for m in cluster):
            return list(cluster)
    return []


def _leader(answered: Mapping[str, Diagnostic]) -> Diagnostic | None:
    """The diagnostic of the member leading in the highest term, if it answered."""
    leaders = [d for d in answered.values() if d.get("status") == "leader"]
    return max(leaders, key=lambda d: d.get("persist", {}).get("currentTerm", 0), default=None)


async def diagnose_members(
    client: AsyncClient, endpoints: Sequence[str]
) -> tuple[list[str], dict[str, Diagnostic], dict[str, RaftctlError]]:
    """(members in order, answers by member address, errors by address).

    Every endpoint is asked; then the members it named that were not asked yet. When no
    endpoint gives a usable answer, raises `no_answer`'s error.
    """
    answered: dict[str, Diagnostic] = {}
    errors: dict[str, RaftctlError] = {}
    for endpoint, answer in (await _gather(client.diagnostic, endpoints)).items():
        if isinstance(answer, RaftctlError):
            errors[endpoint] = answer
        else:
            # Key by the node's own address: "-e localhost:7001" and the member list's
            # "127.0.0.1:7001" are the same node.
            answered[_self_address(endpoint, answer)] = answer
    if not answered:
        raise no_answer(errors)
    members = _members(answered)
    missing = [m for m in members if m not in answered and m not in errors]
    for address, answer in (await _gather(client.diagnostic, missing)).items():
        if isinstance(answer, RaftctlError):
            errors[address] = answer
        else:
            answered[address] = answer
    # Answering endpoints that are not members (removed nodes, blank ones) come last.
    ordered = members + [a for a in answered if a not in members]
    return ordered, answered, errors


async def status_rows(client: AsyncClient, endpoints: Sequence[str]) -> list[StatusRow]:
    """One row per cluster member, plus any answering endpoint that is not a member."""
    ordered, answered, errors = await diagnose_members(client, endpoints)
    leader = _leader(answered)
    return [
        status_row(a, answered[a], leader)
        if a in answered
        else unreachable_row(a, reason(errors[a]), leader)
        for a in ordered
    ]


async def collect_status(
    endpoints: Sequence[str], timeout: float, **access: Any
) -> list[StatusRow]:
    """`status_rows` with a client of its own; ``access``: the client's token and TLS."""
    async with AsyncClient(endpoints, timeout, **access) as client:
        return await status_rows(client, endpoints)


async def first_diagnostic(
    endpoints: Sequence[str], timeout: float, **access: Any
) -> tuple[str, Diagnostic]:
    """The diagnostic of the first endpoint (in the given order) that answers."""
    async with AsyncClient(endpoints, timeout, **access) as client:
        answers = await _gather(client.diagnostic, endpoints)
    for endpoint, answer in answers.items():
        if not isinstance(answer, RaftctlError):
            return endpoint, answer
    raise no_answer({e: a for e, a in answers.items() if isinstance(a, RaftctlError)})


async def health_rows(
    endpoints: Sequence[str], timeout: float, **access: Any
) -> list[HealthRow]:
    """Every member's health check, timed; raises like `diagnose_members`."""
    async with AsyncClient(endpoints, timeout, **access) as client:
        ordered, _, errors = await diagnose_members(client, endpoints)
        loop = asyncio.get_running_loop()

        async def check(address: str) -> tuple[Diagnostic, float]:
            started = loop.time()
            answer = await client.health(address)
            return answer, (loop.time() - started) * 1000

        checked = await _gather(check, [a for a in ordered if a not in errors])
    rows = []
    for address in ordered:
        outcome = errors.get(address) or checked[address]
        if isinstance(outcome, RaftctlError):
            rows.append(HealthRow(address=address, healthy=False, took_ms=None, leader=None,
                                  commit_index=None, error=reason(outcome)))
            continue
        answer, took = outcome
        leader, commit = answer.get("leader"), answer.get("commit_index")
        rows.append(HealthRow(
            address=address,
            healthy=True,
            took_ms=round(took, 1),
            leader=leader if isinstance(leader, str) else None,
            commit_index=commit if isinstance(commit, int) else None,
        ))
    return rows
