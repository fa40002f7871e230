"""What raftd tells an operator's log, from a real node started as a service would start it:
``raftd start --config node.toml --log-format json`` (one JSON object per line on stderr)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from raftctl import Client
from raftctl.localcluster import LocalCluster, free_ports
from tests.integration.helpers import DEADLINE, diagnostic, wait_until


def test_json_log_has_the_startup_line_role_and_membership_changes(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path, fsync=True)  # writes node1's config; started below
    endpoint = cluster.endpoints[0]
    log_path = tmp_path / "raftd.json.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftd", "start", "--config", str(cluster.config_paths[0]),
             "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
    try:
        wait_until(lambda: (d := diagnostic(endpoint)) is not None and d["status"] == "leader",
                   "the single node to lead")
        learner = f"127.0.0.1:{free_ports(1)[0]}"  # nobody there: it stays a learner
        with Client([endpoint], timeout=DEADLINE) as client:
            client.add_node(learner, learner=True)
    finally:
        proc.send_signal(signal.SIGTERM)  # our own child
        assert proc.wait(timeout=DEADLINE) == 0
    lines: list[dict[str, Any]] = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines), lines
    messages = [line["msg"] for line in lines if line["level"] == "info"]

    def one(prefix: str) -> str:
        found = [m for m in messages if m.startswith(prefix)]
        assert found, f"no INFO line starting {prefix!r} in {messages}"
        return found[0]

    startup = one(f"raftd {endpoint} serving on {endpoint}")
    assert f"data {tmp_path / 'data' / 'n1'};" in startup and f"members {endpoint};" in startup
    assert "fsync on" in startup
    one("role candidate -> leader")
    assert learner in one("membership: add_learner")


def test_a_config_error_is_one_json_line_in_the_json_log(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\naddress = "127.0.0.1:7001"\ndata_dir = "data"\nlisten_on = 1\n'
                      '[cluster]\nmembers = ["127.0.0.1:7001"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "raftd", "start", "--config", str(config), "--log-format", "json"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=tmp_path,
        timeout=DEADLINE, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and "listen_on" in record["msg"], record
