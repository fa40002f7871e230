"""Real ``raftd`` processes for the chaos test, each optionally inside its network namespace.

``LocalCluster`` (raftctl) only runs nodes on 127.0.0.1; the chaos test also needs to start a
node through ``ip netns exec NS`` with an address in the test subnet, and to restart it there
after a kill. Like LocalCluster, only processes this object started are ever signalled, by
PID, and every node appends its output to ``node{k}.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import raftd
from raftd.config import render_node_config

_SOURCE_ROOT = Path(raftd.__file__).resolve().parent.parent
_EXEC_DEADLINE = 30.0
"""Generous: how long ``ip netns exec`` may take to become the node process."""
_POLL = 0.01


class ChaosCluster:
    """Nodes at ``addresses``; ``prefix(i)`` is prepended to node i's command line."""

    def __init__(
        self,
        base_dir: Path,
        addresses: Sequence[str],
        *,
        raft: Mapping[str, Any],
        prefix: Callable[[int], list[str]] = lambda i: [],
    ) -> None:
        self.base_dir = base_dir
        self.endpoints = list(addresses)
        self._prefix = prefix
        base_dir.mkdir(parents=True, exist_ok=True)
        self.config_paths = [base_dir / f"node{k}.toml" for k in range(1, len(addresses) + 1)]
        self.log_paths = [base_dir / f"node{k}.log" for k in range(1, len(addresses) + 1)]
        for k, (path, address) in enumerate(zip(self.config_paths, addresses, strict=True), 1):
            path.write_text(render_node_config(address, f"data/n{k}", addresses, raft))
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * len(addresses)
        self.stopped: set[int] = set()
        """Nodes sent SIGSTOP and not yet SIGCONT."""

    def __len__(self) -> int:
        return len(self.endpoints)

    def start(self, i: int) -> None:
        """Start node i (again); a no-op while it runs."""
        if self.running(i):
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "raftd", "start", "--config", str(self.config_paths[i])]
        with open(self.log_paths[i], "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                self._prefix(i) + command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.base_dir,
                env=env,
            )
        self._procs[i] = proc
        if self._prefix(i):
            self._await_exec(proc, command)

    def start_all(self) -> None:
        for i in range(len(self)):
            self.start(i)

    @staticmethod
    def _await_exec(proc: subprocess.Popen[bytes], command: list[str]) -> None:
        """Wait until the launcher has exec'd the node, so that proc.pid is the node's PID."""
        deadline = time.monotonic() + _EXEC_DEADLINE
        while proc.poll() is None:
            try:
                argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                break
            if argv[: len(command)] == [c.encode() for c in command]:
                return
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{proc.args!r} did not exec the node within {_EXEC_DEADLINE}s")
            time.sleep(_POLL)

    def running(self, i: int) -> bool:
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def pid(self, i: int) -> int | None:
        proc = self._procs[i]
        return proc.pid if proc is not None else None

    def send(self, i: int, sig: int) -> bool:
        """Send ``sig`` to node i if it runs; SIGKILL also waits until it is gone."""
        proc = self._procs[i]
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped.add(i)
        elif sig in (signal.SIGCONT, signal.SIGKILL):
            self.stopped.discard(i)
        if sig == signal.SIGKILL:
            proc.wait()
        return True

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGCONT and SIGTERM every running node; SIGKILL those still running at the deadline."""
        running = [i for i in range(len(self)) if self.running(i)]
        for i in running:
            self.send(i, signal.SIGCONT)  # a stopped node acts on SIGTERM only once resumed
            self.send(i, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for i in running:
            proc = self._procs[i]
            assert proc is not None
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.send(i, signal.SIGKILL)
