"""The sans-IO rule, enforced for the whole ``raftd`` package.

Only the modules listed in ``IO_MODULES`` may import I/O, clocks, threads or the event loop
(``IO_IMPORTS``), and each only what its entry names. Every other raftd module, present or
future, imports none of them: core/, wire/, replica.py and the state machine in particular,
which the simulator runs deterministically. A new runtime-side module needs an entry here,
with its reason, in the same change.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "raftd"
IO_IMPORTS = frozenset({
    "asyncio", "uvloop", "socket", "ssl", "select", "selectors", "signal",  # network, loop
    "time", "datetime",  # clocks
    "threading", "concurrent", "multiprocessing", "subprocess",  # threads and processes
    "os", "fcntl", "tempfile", "shutil",  # files
    "prometheus_client",  # serves HTTP from a thread of its own
})

IO_MODULES: dict[str, tuple[frozenset[str], str]] = {
    # The runtime: event loop, sockets, clock, signals.
    "server.py": (frozenset({"asyncio", "uvloop", "signal", "time", "concurrent", "os"}),
                  "the asyncio runtime: event loop, ticks, signals, WAL thread, random seed"),
    "transport/peers.py": (frozenset({"asyncio", "socket", "time", "os"}),
                           "UDP endpoint; fragment timers; random transfer ids"),
    "transport/clients.py": (frozenset({"asyncio", "socket", "ssl"}),
                             "TCP (and TLS) listener for clients"),
    "transport/addresses.py": (frozenset({"asyncio", "socket"}),
                               "looks peer names up off the event loop"),
    "snapshotter.py": (frozenset({"asyncio", "time"}),
                       "writes snapshots in the loop's executor; timing and retry backoff"),
    "federated/coordinator.py": (frozenset({"asyncio", "concurrent", "time"}),
                                 "timers on the loop; keys and averaging in worker threads"),
    "metrics.py": (frozenset({"prometheus_client"}), "serves /metrics over HTTP"),
    "logs.py": (frozenset({"datetime"}), "timestamps of JSON log lines"),
    # Files: the storage seam and what writes or reads files outside it.
    "storage/files.py": (frozenset({"os", "fcntl"}), "the FileSystem seam over os, and locks"),
    "storage/disk.py": (frozenset({"os", "concurrent"}),
                        "data-dir paths and probe; executor type for the WAL's next segment"),
    "storage/wal.py": (frozenset({"os", "concurrent"}),
                       "segment paths; next segment preallocated in a background thread"),
    "storage/hardstate.py": (frozenset({"os"}), "file paths (I/O through FileSystem)"),
    "storage/snapshots.py": (frozenset({"os"}), "file paths (I/O through FileSystem)"),
    "storage/owner.py": (frozenset({"os"}), "path of the data dir's NODE file"),
    "recovery.py": (frozenset({"os"}), "creates data dirs for restore / force-new-cluster"),
    "backup.py": (frozenset({"os", "tempfile"}), "writes backup files atomically"),
    "config.py": (frozenset({"os"}), "reads node.toml, checks the data dir, writes key files"),
    "federated/crypto.py": (frozenset({"os"}), "os.urandom nonces"),
    "federated/data.py": (frozenset({"os"}), "reads and writes data set shards"),
}

PURE_DIRS = ("core", "wire")
"""Packages that must stay pure whatever IO_MODULES says (the deterministic core)."""
PURE_FILES = ("replica.py", "statemachine.py", "layered.py")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``, function-level ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules() -> dict[str, Path]:
    return {p.relative_to(ROOT).as_posix(): p for p in sorted(ROOT.rglob("*.py"))}


def test_only_the_listed_modules_import_io_and_each_only_what_is_listed() -> None:
    found = modules()
    assert len(found) > 40
    wrong = {}
    for name, path in found.items():
        used = imported_modules(path) & IO_IMPORTS
        allowed = IO_MODULES.get(name, (frozenset(), ""))[0]
        if used != allowed:
            wrong[name] = {"imports": sorted(used), "listed": sorted(allowed)}
    assert wrong == {}, (
        "raftd modules whose I/O imports differ from IO_MODULES: move the I/O to the runtime "
        "side, or list the module there with its reason (and drop what it no longer uses)"
    )


def test_every_listed_module_exists_and_has_a_reason() -> None:
    found = modules()
    assert sorted(set(IO_MODULES) - set(found)) == []
    assert [name for name, (_, reason) in IO_MODULES.items() if not reason.strip()] == []


def test_the_core_wire_and_replica_are_never_listed() -> None:
    pure = [name for name in IO_MODULES
            if name.split("/")[0] in PURE_DIRS or name in PURE_FILES]
    assert pure == []
    for name in PURE_FILES:
        assert (ROOT / name).exists(), name
    for directory in PURE_DIRS:
        assert len(list((ROOT / directory).glob("*.py"))) > 5, directory


def test_core_uses_no_global_randomness() -> None:
    for path in sorted((ROOT / "core").glob("*.py")):
        text = path.read_text()
        assert "random.random(" not in text and "random.randint(" not in text, path
