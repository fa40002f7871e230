"""Misconfigurations on real processes, and what the user is told: a node left without the
cluster secret, and a client with a wrong token rather than none."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from raftctl import Client
from raftctl.cli import cli as raftctl_cli
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    diagnostic,
    wait_diagnostic,
    wait_for_leader,
    wait_until,
)

TOKEN = "misconfig-client-token-0123456789"
NO_SECRET = "and this node has no [cluster] secret_file: it drops them all"
SECRET_MISSING = ("a peer sends unauthenticated datagrams (from 127.0.0.1:{}): is its [cluster] "
                  "secret_file missing?")


def warnings(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if "WARNING" in line and text in line]


def strip_secret(config: Path) -> None:
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.startswith("secret_file")))


def test_a_node_added_without_the_cluster_secret_says_so(make_secure: ClusterFactory) -> None:
    cluster = make_secure(3, secret=True)
    wait_for_leader(cluster)
    new = cluster.add_spare()
    strip_secret(cluster.config_paths[new])
    cluster.start(new)
    with Client(cluster.endpoints[:3], timeout=DEADLINE) as admin:
        admin.add_node(cluster.endpoints[new])  # a learner first: commits without it

    def sealed_drops() -> dict[str, int] | None:
        diag = diagnostic(cluster.endpoints[new])
        dropped = diag["droppedDatagrams"] if diag is not None else None
        return dropped if dropped and dropped["sealed"] > 0 else None

    dropped = wait_until(sealed_drops, "the node without a secret to drop sealed datagrams")
    assert set(dropped) == {"undecodable", "misaddressed", "not_a_member", "no_space",
                            "bad_fragment", "unresolved", "sealed"}
    wait_until(lambda: warnings(cluster.log_paths[new], NO_SECRET), "its warning")
    first = dropped["sealed"]
    wait_until(lambda: (sealed_drops() or {}).get("sealed", 0) > first + 50 or None,
               "50 more sealed datagrams")
    cluster.stop_all()  # its whole life in the log before counting
    # Sealed datagrams kept coming many times a second: still one line (at most one a minute).
    assert len(warnings(cluster.log_paths[new], NO_SECRET)) == 1


def test_members_hear_a_member_without_the_secret_and_say_so(make_secure: ClusterFactory) -> None:
    """A new cluster whose third member lacks the secret: the others drop its unsealed probes
    (and, never hearing from it, never bootstrap: see raftd.core.bootstrap)."""
    cluster = make_secure(3, start=False, secret=True)
    strip_secret(cluster.config_paths[2])
    port = cluster.endpoints[2].rpartition(":")[2]
    cluster.start_all()
    wait_until(lambda: all(warnings(log, SECRET_MISSING.format(port))
                           for log in cluster.log_paths[:2]), "the others' warning")
    for endpoint in cluster.endpoints[:2]:
        diag = wait_diagnostic(endpoint)
        assert diag["droppedDatagrams"]["unauthenticated"] > 0


def test_a_wrong_token_is_not_reported_as_a_missing_one(
    make_secure: ClusterFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "client.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cluster = make_secure(1, access={"token": TOKEN},
                          security={"client_token_file": str(token_file)})
    runner = CliRunner()
    ep = ["-e", cluster.endpoints[0], "--timeout", str(DEADLINE)]
    wrong = runner.invoke(raftctl_cli, [*ep, "--token", "wrongwrongwrong", "set", "k", "v"])
    none = runner.invoke(raftctl_cli, [*ep, "set", "k", "v"])
    right = runner.invoke(raftctl_cli, [*ep, "--token", TOKEN, "set", "k", "v"])
    assert (wrong.exit_code, none.exit_code, right.exit_code) == (1, 1, 0), wrong.output
    assert ("unauthorized: wrong client token: it does not match this node's [security] "
            "client_token_file (raftctl --token)") in wrong.stderr
    assert "unauthorized: this node requires a client token (raftctl --token)" in none.stderr
