"""Real network faults for the chaos test: one network namespace per node, joined by a bridge.

Layout (``tag`` is unique to one test run, ``X`` a /24 no interface here uses yet):

    root namespace:  bridge rc<tag>br  10.77.X.254/24   (clients reach the nodes through it)
                      ├─ veth rc<tag>h1 ── eth0 10.77.X.1/24 in namespace rafty-<tag>-1
                      ├─ veth rc<tag>h2 ── eth0 10.77.X.2/24 in namespace rafty-<tag>-2
                      └─ ...

Faults, all with iproute2 alone (no iptables or nft binary is needed):

- ``isolate(i)``: the host end of node i's veth goes down; node i hears nothing and nobody,
  clients included, hears it (a pulled cable).
- ``cut(a, b)``: node a's frames to node b are lost on the wire. Node a gets a permanent
  neighbour entry mapping b's address to a MAC no interface has, so the bridge floods the
  frames and every port drops them; a's ``sendto`` still succeeds, as on a real network
  whose switch ate the packet. ``partition(groups)`` cuts every pair across groups, both ways.
- ``impair(i, delay_ms, loss_percent)``: ``tc netem`` on node i's interface, only where the
  kernel has netem (``netem_reason()`` says why not otherwise).

Everything created is recorded as it is created and removed by ``destroy()`` (deleting a
namespace deletes its veth pair), so a failure half-way through setup still cleans up.
``probe()`` makes a real attempt, so the test knows whether namespaces can be used here (they
need CAP_NET_ADMIN) instead of guessing from the user id.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

SUBNET_PREFIX = "10.77"
"""Second octet fixed, third drawn among unused ones: addresses are unique to one test run."""
BOGUS_MAC = "02:00:5e:77:00:01"
"""A locally administered MAC no interface has: frames sent to it are dropped by every port."""
_COMMAND_TIMEOUT = 20.0


class NetnsError(RuntimeError):
    """An ip or tc command failed; the message has the command and its stderr."""


def _run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def probe() -> str | None:
    """Why network namespaces cannot be used here, or None if they can (a real attempt)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    tag = f"p{os.getpid() % 100000:05d}"
    name, host = f"rafty-{tag}", f"rc{tag}"
    try:
        _run(["ip", "netns", "add", name])
    except NetnsError as exc:
        return f"cannot create a network namespace (CAP_NET_ADMIN needed): {exc}"
    try:
        _run(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", name])
    except NetnsError as exc:
        return f"cannot create a veth pair into a namespace: {exc}"
    finally:
        _run(["ip", "link", "del", host], check=False)
        _run(["ip", "netns", "del", name], check=False)
    return None


def netem_reason() -> str | None:
    """Why ``tc netem`` (delay, loss) cannot be used here, or None if it can."""
    if shutil.which("tc") is None:
        return "the tc command (iproute2) is not installed"
    name = f"rafty-q{os.getpid() % 100000:05d}"
    try:
        _run(["ip", "netns", "add", name])
    except NetnsError as exc:
        return f"cannot create a network namespace to try netem in: {exc}"
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        _run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
              "delay", "1ms"])
    except NetnsError as exc:
        return f"tc netem is not available (kernel without sch_netem?): {exc}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


def _used_third_octets() -> set[int]:
    text = _run(["ip", "-4", "-o", "addr", "show"]).stdout + _run(["ip", "-4", "route"]).stdout
    pattern = re.compile(rf"\b{re.escape(SUBNET_PREFIX)}\.(\d+)\.")
    return {int(m.group(1)) for m in pattern.finditer(text)}


class Network:
    """Namespaces, veth pairs and a bridge for ``n`` nodes; see the module docstring."""

    def __init__(self, n: int, *, netem: bool) -> None:
        self.n = n
        self.netem = netem
        self.tag = f"{random.randrange(16**4):04x}"
        free = sorted(set(range(1, 254)) - _used_third_octets())
        if not free:
            raise NetnsError(f"no free {SUBNET_PREFIX}.X.0/24 subnet")
        self.subnet = ipaddress.ip_network(f"{SUBNET_PREFIX}.{random.choice(free)}.0/24")
        self.bridge = f"rc{self.tag}br"
        self.namespaces = [f"rafty-{self.tag}-{i + 1}" for i in range(n)]
        self.host_links = [f"rc{self.tag}h{i + 1}" for i in range(n)]
        self._created_namespaces: list[str] = []
        self._created_links: list[str] = []
        self._cuts: set[tuple[int, int]] = set()
        self._down: set[int] = set()
        self._impaired: set[int] = set()

    def address(self, i: int) -> str:
        """Node i's IP address inside its namespace."""
        return str(self.subnet.network_address + i + 1)

    @property
    def bridge_address(self) -> str:
        return str(self.subnet.network_address + 254)

    def exec_prefix(self, i: int) -> list[str]:
        """Prefix a command with this to run it inside node i's namespace.

        ``ip netns exec`` switches namespace and execs the command in the same process, so
        the PID of the launched process is the node's own.
        """
        return ["ip", "netns", "exec", self.namespaces[i]]

    def create(self) -> None:
        """Build the namespaces, links and bridge; raises NetnsError (call destroy() then)."""
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._created_links.append(self.bridge)
        _run(["ip", "addr", "add", f"{self.bridge_address}/{self.subnet.prefixlen}",
              "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i, (ns, host) in enumerate(zip(self.namespaces, self.host_links, strict=True)):
            _run(["ip", "netns", "add", ns])
            self._created_namespaces.append(ns)
            _run(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns])
            self._created_links.append(host)
            _run(["ip", "link", "set", host, "master", self.bridge])
            _run(["ip", "link", "set", host, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(i)}/{self.subnet.prefixlen}",
                  "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Traffic to the test subnet must leave through our bridge and nowhere else.
        route = _run(["ip", "route", "get", self.address(0)]).stdout
        if f"dev {self.bridge}" not in route:
            raise NetnsError(f"{self.address(0)} is not routed through {self.bridge}: {route}")

    # -- faults --------------------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        _run(["ip", "link", "set", self.host_links[i], "down"])
        self._down.add(i)

    def rejoin(self, i: int) -> None:
        _run(["ip", "link", "set", self.host_links[i], "up"])
        self._down.discard(i)

    def cut(self, src: int, dst: int) -> None:
        """Frames from node src to node dst are lost (one way)."""
        _run(["ip", "-n", self.namespaces[src], "neigh", "replace", self.address(dst),
              "lladdr", BOGUS_MAC, "nud", "permanent", "dev", "eth0"])
        self._cuts.add((src, dst))

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every pair of nodes in different groups, both ways."""
        sets = [set(g) for g in groups]
        for a, group in enumerate(sets):
            for b, other in enumerate(sets):
                if a != b:
                    for src in group:
                        for dst in other:
                            self.cut(src, dst)

    def impair(self, i: int, *, delay_ms: int, loss_percent: float) -> None:
        if not self.netem:
            raise NetnsError("netem is not available here")
        _run(["ip", "netns", "exec", self.namespaces[i], "tc", "qdisc", "replace", "dev", "eth0",
              "root", "netem", "delay", f"{delay_ms}ms", f"{delay_ms // 2}ms",
              "loss", f"{loss_percent}%"])
        self._impaired.add(i)

    def heal(self) -> None:
        """Undo every fault: links up, cuts removed, netem removed."""
        for i in sorted(self._down):
            self.rejoin(i)
        for src, dst in sorted(self._cuts):
            # Deleting the entry lets ARP find the real MAC again.
            _run(["ip", "-n", self.namespaces[src], "neigh", "del", self.address(dst),
                  "dev", "eth0"], check=False)
        self._cuts.clear()
        for i in sorted(self._impaired):
            _run(["ip", "netns", "exec", self.namespaces[i], "tc", "qdisc", "del", "dev", "eth0",
                  "root"], check=False)
        self._impaired.clear()

    def destroy(self) -> list[str]:
        """Remove everything created; returns what could not be removed (empty: all gone)."""
        problems: list[str] = []
        for ns in reversed(self._created_namespaces):
            done = _run(["ip", "netns", "del", ns], check=False)
            if done.returncode != 0:
                problems.append(f"namespace {ns}: {done.stderr.strip()}")
        self._created_namespaces.clear()
        for link in reversed(self._created_links):
            # A namespace's deletion took its veth pair along; the bridge is left to delete.
            # The kernel frees a deleted namespace's veth ends asynchronously: a link seen a
            # moment ago may be gone by the time we delete it, which is what we wanted.
            if _run(["ip", "link", "show", link], check=False).returncode == 0:
                done = _run(["ip", "link", "del", link], check=False)
                still_there = _run(["ip", "link", "show", link], check=False).returncode == 0
                if done.returncode != 0 and still_there:
                    problems.append(f"link {link}: {done.stderr.strip()}")
        self._created_links.clear()
        return problems
