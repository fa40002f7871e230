"""A one-minute tour of rafty on this machine (``make demo``, ``python -m raftctl.demo``).

Starts a 3-node cluster in a temporary directory, writes and reads keys with the real
``raftctl`` command, kills the leader with SIGKILL, and shows that a new leader takes over
with every key intact. Exits 0 on success, 1 if anything did not behave.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from rich.console import Console

from raftctl.localcluster import LocalCluster

KEYS = {"greeting": "hello, raft", "answer": "42", "color": "teal"}
ELECTION_TIMEOUT = 15.0
COMMAND_TIMEOUT = 20.0

console = Console(markup=False, emoji=False, highlight=False)


class DemoFailed(Exception):
    pass


def step(text: str) -> None:
    console.print()
    console.print(f"==> {text}", style="bold cyan")


def raftctl(env: dict[str, str], *args: str, show: bool = True) -> str:
    """Run the raftctl CLI as a user would and return its stdout.

    `show`: print the command and its output (off for the demo's own checks).
    """
    if show:
        console.print(f"$ raftctl {shlex.join(args)}", style="bold")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "raftctl", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailed(
            f"raftctl {shlex.join(args)} did not finish in {COMMAND_TIMEOUT:g}s"
        ) from None
    if show or done.returncode != 0:
        sys.stdout.write(done.stdout)
        sys.stdout.write(done.stderr)
    if done.returncode != 0:
        raise DemoFailed(f"raftctl {shlex.join(args)} exited with status {done.returncode}")
    return done.stdout


def check_keys(env: dict[str, str]) -> None:
    for key, value in KEYS.items():
        got = raftctl(env, "get", key).rstrip("\n")
        if got != value:
            raise DemoFailed(f"get {key} returned {got!r}, expected {value!r}")


def tour(cluster: LocalCluster) -> None:
    env = dict(os.environ, RAFTCTL_ENDPOINTS=",".join(cluster.endpoints))
    if sys.stdout.isatty():
        env["FORCE_COLOR"] = "1"  # raftctl's output is captured, but shown on this terminal

    step(f"Starting 3 raftd nodes in {cluster.base_dir}")
    for path in cluster.config_paths:
        console.print(f"$ raftd start --config {path.name} &")
    started = time.monotonic()
    cluster.start_all()
    leader = cluster.wait_for_leader(ELECTION_TIMEOUT)
    console.print(
        f"node{leader + 1} ({cluster.endpoints[leader]}) was elected leader "
        f"in {time.monotonic() - started:.1f}s"
    )

    step("Writing and reading keys (the client finds the leader by itself)")
    console.print(f"$ export RAFTCTL_ENDPOINTS={env['RAFTCTL_ENDPOINTS']}", style="bold")
    for key, value in KEYS.items():
        raftctl(env, "set", key, value)
    check_keys(env)
    raftctl(env, "-o", "table", "status")

    step(f"Killing the leader, node{leader + 1} (pid {cluster.pid(leader)}), with SIGKILL")
    killed_at = time.monotonic()
    cluster.kill(leader)
    new_leader = cluster.wait_for_leader(ELECTION_TIMEOUT)
    console.print(
        f"node{new_leader + 1} ({cluster.endpoints[new_leader]}) took over "
        f"after {time.monotonic() - killed_at:.1f}s"
    )

    step("The cluster still answers, with every key intact")
    raftctl(env, "-o", "table", "status")
    check_keys(env)
    rows = json.loads(raftctl(env, "-o", "json", "status", show=False))
    down = [r["address"] for r in rows if not r["reachable"]]
    if down != [cluster.endpoints[leader]]:
        raise DemoFailed(f"expected only {cluster.endpoints[leader]} unreachable, got {down}")


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rafty-demo-") as base_dir:
        cluster = LocalCluster(3, base_dir)
        try:
            tour(cluster)
        except (DemoFailed, TimeoutError) as err:
            console.print(f"\nDemo FAILED: {err}", style="bold red")
            for path in cluster.log_paths:
                if path.exists():
                    console.print(f"--- last lines of {path.name}", style="bold")
                    console.print("\n".join(path.read_text(errors="replace").splitlines()[-15:]))
            return 1
        finally:
            step("Stopping the nodes (SIGTERM)")
            cluster.stop_all()
    console.print(f"Demo finished OK in {time.monotonic() - started:.1f}s.", style="bold green")
    return 0


if __name__ == "__main__":
    sys.exit(main())
