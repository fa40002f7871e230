"""Node configuration: load and validate ``node.toml``, and write fresh cluster configs.

Theory of operation: a config file is parsed with ``tomllib`` into plain dicts, then every
section is checked against a table of known keys before any value is used. Every problem
raises `ConfigError` with ONE line that names the file and the key (``node.toml: [raft]
tick_ms must be a positive integer, got "x"``), because a daemon that refuses to start must
say exactly why. Unknown keys are errors, not warnings: a typo such as ``fsnyc = false``
would otherwise silently keep the default.

`write_cluster_configs` renders the files `raftd init` writes; LocalCluster (tests, demo)
uses it too, so both always produce configs that `load_config` accepts.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import json
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftd.storage import owner


class ConfigError(Exception):
    """The node config is unusable; ``str(err)`` is one line naming the file and the key."""


# ---------------------------------------------------------------------------------------------
# Addresses

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into ``(host, port)``; raise ValueError if bad."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected host:port")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [ipv6]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if ":" in host:
            raise ValueError("write IPv6 addresses as [addr]:port")
        if not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} is not a valid host name")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback IP (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_address(host: str, port: int) -> str:
    """Inverse of `parse_address`: brackets IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# The config value types


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSection:
    address: str
    """Advertised ``host:port``: the node's identity; UDP for peers and TCP for clients."""
    data_dir: Path
    """Absolute; a relative value in the file is resolved against the file's directory."""
    listen: str
    """Where to bind; defaults to `address` (differs behind NAT or in containers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSection:
    members: tuple[str, ...]
    """Initial voters, in file order. A node not listed here starts blank and waits to join."""
    secret_file: Path | None = None
    """Absolute path of the shared key authenticating peer datagrams; None: no authentication."""
    secret: bytes | None = field(default=None, repr=False)
    """The key itself (the file's content, surrounding whitespace stripped), read at load."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecuritySection:
    """Client access: a token every request must carry, and TLS on the client port."""

    client_token_file: Path | None = None
    client_token: bytes | None = field(default=None, repr=False)
    """The token (the file's content, surrounding whitespace stripped), read at load."""
    tls_cert: Path | None = None
    """PEM certificate chain the node presents to clients; with ``tls_key``, TLS is on."""
    tls_key: Path | None = None
    tls_ca: Path | None = None
    """PEM CA certificates: when set, clients must present a certificate signed by one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSection:
    address: str | None = None
    """``host:port`` serving Prometheus text at ``/metrics``; None: no metrics endpoint."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftSection:
    tick_ms: int = 10
    election_timeout_ms: tuple[int, int] = (150, 300)
    heartbeat_interval_ms: int = 30
    fsync: bool = True
    max_datagram_bytes: int = 1400
    max_entry_bytes: int = 1048576
    snapshot_every: int = 10000
    snapshot_min_log_bytes: int = 67108864
    promote_lag_entries: int = 1000
    snapshot_trailing_entries: int = 5000

    @property
    def election_ticks(self) -> tuple[int, int]:
        """Election timeout range in ticks (validated to divide exactly)."""
        low, high = self.election_timeout_ms
        return low // self.tick_ms, high // self.tick_ms

    @property
    def heartbeat_ticks(self) -> int:
        return self.heartbeat_interval_ms // self.tick_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class FederatedSection:
    """The federated-learning application (``raftd.federated``); off unless ``enabled``."""

    enabled: bool = False
    rotate_after_s: float = 30.0
    """The aggregator (the leader) hands leadership to the next voter after this long."""
    min_updates: int = 3
    """A round is averaged as soon as this many participants sent an update..."""
    round_timeout_s: float = 20.0
    """...or once this long has passed since the round began, with at least one update."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    node: NodeSection
    cluster: ClusterSection
    raft: RaftSection = field(default_factory=RaftSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    federated: FederatedSection = field(default_factory=FederatedSection)
    source: Path | None = None
    """The file this was loaded from, for messages; None when built in code."""


# ---------------------------------------------------------------------------------------------
# Validation tables. A key's checker returns the converted value or raises _Bad(reason).


class _Bad(Exception):
    """A value is wrong; the caller prefixes the file and key to make the one-line message."""


def _show(value: Any) -> str:
    # TOML-like rendering of what the user wrote: strings quoted, booleans lowercase.
    return json.dumps(value, default=str, ensure_ascii=False)


def _int(value: Any, *, minimum: int, what: str) -> int:
    # bool is an int subclass in Python, but `tick_ms = true` is certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Bad(f"must be {what}, got {_show(value)}")
    return value


def _positive(value: Any) -> int:
    return _int(value, minimum=1, what="a positive integer")


def _non_negative(value: Any) -> int:
    return _int(value, minimum=0, what="a non-negative integer")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_show(value)}")
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f'must be a "host:port" string, got {_show(value)}')
    try:
        parse_address(value)
    except ValueError as err:
        raise _Bad(f'must be "host:port", got {_show(value)} ({err})') from None
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"must be a non-empty path string, got {_show(value)}")
    return value


def _members(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad(f'must be a non-empty list of "host:port" strings, got {_show(value)}')
    seen: set[str] = set()
    for item in value:
        try:
            _address(item)
        except _Bad as bad:
            raise _Bad(f"entry {bad}") from None
        if item in seen:
            raise _Bad(f"lists {_show(item)} twice")
        seen.add(item)
    return tuple(value)


def _range(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        or value[0] > value[1]
    ):
        raise _Bad(f"must be [low, high] with 0 < low <= high, got {_show(value)}")
    return value[0], value[1]


def _datagram(value: Any) -> int:
    # 512 leaves room for a heartbeat with headers; 65507 is the largest IPv4 UDP payload.
    return _bounded(value, 512, 65507)


def _seconds(value: Any) -> float:
    # TOML has distinct integers and floats; both are natural for a duration.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise _Bad(f"must be a positive number of seconds, got {_show(value)}")
    return float(value)


def _bounded(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"must be an integer from {low} to {high}, got {_show(value)}")
    return value


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One config key: how it is checked and how it is documented (raftd(8), README)."""

    section: str
    key: str
    check: Callable[[Any], Any]
    """Converts a valid value or raises _Bad."""
    doc: str
    default: str | None = None
    """The default as TOML text; None when the key is required or has no default."""
    required: bool = False


_R = RaftSection()
_F = FederatedSection()

KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "node",
        "address",
        _address,
        "Advertised host:port: the node's identity; peers use UDP and clients TCP on this port.",
        required=True,
    ),
    KeySpec(
        "node",
        "data_dir",
        _path,
        "Where the node keeps its log and state; relative paths are relative to the config file. "
        "The first start records the node's address in it (NODE); a node with another address "
        "refuses it.",
        required=True,
    ),
    KeySpec(
        "node",
        "listen",
        _address,
        "host:port to bind when it differs from address (NAT, containers).",
        "address",
    ),
    KeySpec(
        "cluster",
        "members",
        _members,
        "The initial voters, as host:port strings. A node "
        "not listed starts blank and waits to be added. Host names are looked up off the "
        "event loop, again every 30 s (a rescheduled peer may change address); a node "
        "starts while a peer's name does not resolve yet and drops datagrams to it meanwhile.",
        required=True,
    ),
    KeySpec(
        "cluster",
        "secret_file",
        _path,
        "File holding the shared cluster key (at least 32 bytes; `raftd init` writes one, mode "
        "0600); every peer datagram is then authenticated with it. Same file on every node.",
    ),
    KeySpec("raft", "tick_ms", _positive, "Length of one timer tick.", str(_R.tick_ms)),
    KeySpec(
        "raft",
        "election_timeout_ms",
        _range,
        "Range the election timeout is drawn from; "
        "both bounds multiples of tick_ms, the low bound above it.",
        "[150, 300]",
    ),
    KeySpec(
        "raft",
        "heartbeat_interval_ms",
        _positive,
        "Leader heartbeat period; a multiple of tick_ms below the election timeout.",
        str(_R.heartbeat_interval_ms),
    ),
    KeySpec(
        "raft",
        "fsync",
        _bool,
        "fsync the log before acknowledging; false trades durability for speed (tests only).",
        "true",
    ),
    KeySpec(
        "raft",
        "max_datagram_bytes",
        _datagram,
        "Largest peer datagram (512-65507); keep below the path MTU, raise on loopback.",
        str(_R.max_datagram_bytes),
    ),
    KeySpec(
        "raft",
        "max_entry_bytes",
        _positive,
        "Largest accepted value of a client write; larger than a datagram, it travels in "
        "fragments.",
        str(_R.max_entry_bytes),
    ),
    KeySpec(
        "raft",
        "snapshot_every",
        _positive,
        "Entries since the last snapshot before the next one is taken.",
        str(_R.snapshot_every),
    ),
    KeySpec(
        "raft",
        "snapshot_min_log_bytes",
        _non_negative,
        "Log bytes since the last snapshot a snapshot also waits for (and at least the size "
        "of the last snapshot).",
        str(_R.snapshot_min_log_bytes),
    ),
    KeySpec(
        "raft",
        "promote_lag_entries",
        _non_negative,
        "A learner this close to the leader's log is promoted to voter automatically.",
        str(_R.promote_lag_entries),
    ),
    KeySpec(
        "raft",
        "snapshot_trailing_entries",
        _non_negative,
        "Entries kept before a snapshot, so slightly-behind followers get entries.",
        str(_R.snapshot_trailing_entries),
    ),
    KeySpec(
        "security",
        "client_token_file",
        _path,
        "File holding the token every client request must carry (raftctl --token); others "
        "are answered unauthorized.",
    ),
    KeySpec(
        "security",
        "tls_cert",
        _path,
        "PEM certificate (chain) of the client port; with tls_key, clients must speak TLS.",
    ),
    KeySpec("security", "tls_key", _path, "PEM private key of tls_cert."),
    KeySpec(
        "security",
        "tls_ca",
        _path,
        "PEM CA certificates; when set, clients must present a certificate signed by one.",
    ),
    KeySpec("metrics", "address", _address, "host:port serving Prometheus /metrics."),
    KeySpec(
        "federated",
        "enabled",
        _bool,
        "Host federated learning: the leader aggregates encrypted model updates (needs the "
        "rafty[federated] extra).",
        "false",
    ),
    KeySpec(
        "federated",
        "rotate_after_s",
        _seconds,
        "Seconds a leader aggregates before handing leadership to the next voter.",
        f"{_F.rotate_after_s:g}",
    ),
    KeySpec(
        "federated",
        "min_updates",
        _positive,
        "Participant updates that close a round at once.",
        str(_F.min_updates),
    ),
    KeySpec(
        "federated",
        "round_timeout_s",
        _seconds,
        "Seconds after which a round closes with the updates it has (at least one).",
        f"{_F.round_timeout_s:g}",
    ),
)
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(spec.section for spec in KEYS))
_SCHEMA = {section: {s.key: s for s in KEYS if s.section == section} for section in SECTIONS}


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read, validate and resolve one node's TOML config; raise `ConfigError` on any problem."""
    source = Path(path)
    name = os.fspath(path)

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{name}: {message}")

    try:
        with open(source, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise fail(f"invalid TOML: {err}") from None
    except UnicodeDecodeError as err:  # TOML is UTF-8; tomllib decodes before it parses
        raise fail(f"invalid TOML: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                   f"offset {err.start}); save the file as UTF-8") from None
    except OSError as err:
        raise fail(f"cannot read config: {err.strerror or err}") from None

    values: dict[str, dict[str, Any]] = {}
    for section, table in raw.items():
        if section not in _SCHEMA:
            if not isinstance(table, dict):
                raise fail(f'key "{section}" must be inside a section such as [node]')
            raise fail(f"unknown section [{section}]{_suggest(section, list(_SCHEMA))}")
        if not isinstance(table, dict):
            raise fail(f"[{section}] must be a section, got {_show(table)}")
        checked: dict[str, Any] = {}
        known = _SCHEMA[section]
        for key, value in table.items():
            if key not in known:
                raise fail(f'[{section}] unknown key "{key}"{_suggest(key, list(known))}')
            try:
                checked[key] = known[key].check(value)
            except _Bad as bad:
                raise fail(f"[{section}] {key} {bad}") from None
        values[section] = checked

    for spec in KEYS:
        if spec.required and spec.key not in values.get(spec.section, {}):
            raise fail(f"[{spec.section}] {spec.key} is required")

    node = values["node"]
    base = source.resolve().parent
    raft = RaftSection(**values.get("raft", {}))
    _check_timing(raft, fail)
    data_dir = (source.resolve().parent / node["data_dir"]).resolve()
    problem = _unwritable(data_dir)
    if problem:
        raise fail(f"[node] data_dir {problem}: {data_dir}")
    return NodeConfig(
        node=NodeSection(
            address=node["address"],
            data_dir=data_dir,
            listen=node.get("listen", node["address"]),
        ),
        cluster=_cluster(values["cluster"], base, fail),
        raft=raft,
        metrics=MetricsSection(**values.get("metrics", {})),
        security=_security(values.get("security", {}), base, fail),
        federated=FederatedSection(**values.get("federated", {})),
        source=source,
    )


MIN_SECRET_BYTES = 32
"""A shorter cluster secret is refused (`raftd init` writes 64 hex digits: 256 bits)."""
MIN_TOKEN_BYTES = 16


def _secret_file(
    path: Path, key: str, minimum: int, fail: Callable[[str], ConfigError]
) -> bytes:
    """The content of a key or token file, refused when others may read it or it is short."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as err:
        raise fail(f"{key} cannot be read: {err.strerror or err}: {path}") from None
    if mode & 0o077:
        raise fail(f"{key} must be private to its owner (mode {mode & 0o777:04o}; "
                   f"chmod 600 it): {path}")
    if len(data) < minimum:
        raise fail(f"{key} must hold at least {minimum} bytes, has {len(data)}: {path}")
    return data


def _readable(path: Path, key: str, fail: Callable[[str], ConfigError]) -> Path:
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise fail(f"{key} cannot be read: {err.strerror or err}: {path}") from None
    return path


def _cluster(values: dict[str, Any], base: Path, fail: Callable[[str], ConfigError]
             ) -> ClusterSection:
    secret_file = values.get("secret_file")
    if secret_file is None:
        return ClusterSection(members=values["members"])
    path = (base / secret_file).resolve()
    secret = _secret_file(path, "[cluster] secret_file", MIN_SECRET_BYTES, fail)
    return ClusterSection(members=values["members"], secret_file=path, secret=secret)


def _security(values: dict[str, Any], base: Path, fail: Callable[[str], ConfigError]
              ) -> SecuritySection:
    paths = {key: (base / value).resolve() for key, value in values.items()}
    token = None
    if "client_token_file" in paths:
        token = _secret_file(paths["client_token_file"], "[security] client_token_file",
                             MIN_TOKEN_BYTES, fail)
    if ("tls_cert" in paths) != ("tls_key" in paths):
        raise fail("[security] tls_cert and tls_key go together; set both or neither")
    if "tls_ca" in paths and "tls_cert" not in paths:
        raise fail("[security] tls_ca needs tls_cert and tls_key (it verifies client "
                   "certificates on a TLS port)")
    for key in ("tls_cert", "tls_key", "tls_ca"):
        if key in paths:
            _readable(paths[key], f"[security] {key}", fail)
    return SecuritySection(
        client_token_file=paths.get("client_token_file"),
        client_token=token,
        tls_cert=paths.get("tls_cert"),
        tls_key=paths.get("tls_key"),
        tls_ca=paths.get("tls_ca"),
    )


def _check_timing(raft: RaftSection, fail: Callable[[str], ConfigError]) -> None:
    # Timers count whole ticks, so every interval must be a multiple of the tick.
    tick = raft.tick_ms
    low, high = raft.election_timeout_ms
    intervals = (
        ("election_timeout_ms", low),
        ("election_timeout_ms", high),
        ("heartbeat_interval_ms", raft.heartbeat_interval_ms),
    )
    for key, value in intervals:
        if value % tick:
            raise fail(f"[raft] {key} must be a multiple of tick_ms ({tick}), got {value}")
    if low <= tick:
        raise fail(
            f"[raft] election_timeout_ms must be bigger than tick_ms ({tick}), "
            f"got {_show([low, high])}"
        )
    # A follower must hear several heartbeats per election timeout or it campaigns needlessly.
    if raft.heartbeat_interval_ms >= low:
        raise fail(
            f"[raft] heartbeat_interval_ms must be less than election_timeout_ms's low bound "
            f"({low}), got {raft.heartbeat_interval_ms}"
        )


def _unwritable(data_dir: Path) -> str | None:
    """Why the node could not create or write `data_dir`, or None. Creates nothing."""
    probe = data_dir
    while not probe.exists():
        if probe.parent == probe:
            return "has no existing parent"
        probe = probe.parent
    if not probe.is_dir():
        if probe == data_dir:
            return "is not a directory"
        return f"cannot be created ({probe} is a file)"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == data_dir:
            return "is not writable"
        return f"cannot be created ({probe} is not writable)"
    return None


class DataDirUnavailable(Exception):
    """The data dir failed for a reason that may pass (a full disk, an I/O error): unlike a
    `ConfigError`, restarting later may help (exit status 1)."""


_CONFIG_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                            errno.EISDIR, errno.ENOENT, errno.ELOOP, errno.ENAMETOOLONG})
"""Failures of the path itself, which only a config (or permission) change repairs."""


def prepare_data_dir(config: NodeConfig, *, reclaim: bool = False) -> None:
    """Open the data dir as storage will (`raftd.storage.disk.open_data_dir`) and claim it
    for this node.

    `load_config` only asks the permission bits, which can say yes to a dir that still
    refuses (a path under /proc; for root the bits say yes to almost anything).
    `raftd start` calls this before storage opens the dir, so such a dir is a `ConfigError`
    naming the key (exit 2: restarting would not help); a failure that may pass (ENOSPC,
    EIO) is `DataDirUnavailable` (exit 1). A dir that belongs to another node
    (`raftd.storage.owner`) is a `ConfigError` too, unless ``reclaim`` (--force-new-cluster,
    where the old votes no longer matter) makes it this node's. The claim is made holding
    the LOCK; a LOCK another raftd holds is left to storage to report (exit 1: it goes away
    when that node stops), and that node's dir is not claimed.
    """
    # The storage stack: only `raftd start` needs it, not raftctl's use of this module.
    from raftd.storage.disk import open_data_dir
    from raftd.storage.files import LOCKED, DataDirError, FsyncError, OsFileSystem

    data_dir = config.node.data_dir
    name = os.fspath(config.source) if config.source is not None else "config"

    def fail(problem: str, err: OSError | None) -> Exception:
        reason = (err.strerror or str(err)) if err is not None else "unknown reason"
        text = f"{name}: [node] data_dir {problem} ({reason}): {data_dir}"
        permanent = err is not None and err.errno in _CONFIG_ERRNOS
        return ConfigError(text) if permanent else DataDirUnavailable(text)

    fs = OsFileSystem()
    lock = None
    try:
        lock = open_data_dir(fs, str(data_dir))
        owner.claim(fs, str(data_dir), config.node.address, force=reclaim)
    except DataDirError as err:  # from open_data_dir
        if err.problem == LOCKED:
            return  # another raftd runs on it: storage says so
        raise fail(err.problem, err.cause) from None
    except owner.DataDirOwned as err:
        raise ConfigError(
            f"{name}: [node] data_dir {data_dir} holds the votes and log of node {err.owner}, "
            f"not of {config.node.address} ([node] address); give this node an empty data "
            f"dir (see raftctl add-node) or fix the path"
        ) from None
    except FsyncError as err:
        raise DataDirUnavailable(f"{name}: [node] data_dir: {err}") from None
    except OSError as err:  # from claim: open_data_dir wraps its own
        raise fail("is not writable", err) from None
    finally:
        if lock is not None:
            lock.release()  # storage takes it for good


# ---------------------------------------------------------------------------------------------
# Writing fresh cluster configs (`raftd init`, LocalCluster)

LOOPBACK_DATAGRAM_BYTES = 65000
"""Loopback has a 64 KiB MTU, so large datagrams never fragment there."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string for everything we write.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


SECRET_FILE_NAME = "cluster.key"
"""The cluster secret `write_cluster_configs` creates beside the configs."""


def render_node_config(
    address: str,
    data_dir: str,
    members: Sequence[str],
    raft: Mapping[str, Any],
    *,
    secret_file: str | None = None,
) -> str:
    """The text of one node's config file."""
    lines = [
        "# rafty node config: see `man raftd` or README.md for every key.",
        "[node]",
        f"address = {_toml_value(address)}",
        f"data_dir = {_toml_value(data_dir)}",
        "",
        "[cluster]",
        f"members = {_toml_value(list(members))}",
    ]
    if secret_file is not None:
        lines.append(f"secret_file = {_toml_value(secret_file)}")
    if raft:
        lines += ["", "[raft]"] + [f"{key} = {_toml_value(value)}" for key, value in raft.items()]
    return "\n".join(lines) + "\n"


def write_cluster_configs(
    directory: str | os.PathLike[str],
    addresses: Sequence[str],
    *,
    raft: Mapping[str, Any] | None = None,
    secret: bytes | None = None,
) -> list[Path]:
    """Write ``nodeK.toml`` (K = 1..n) into `directory` for a fresh cluster of `addresses`.

    Node K keeps its data in ``data/nK`` beside its config. When every address is loopback,
    ``max_datagram_bytes`` is raised (unless given) since loopback never fragments. With
    `secret`, it is written to ``cluster.key`` (mode 0600) and every config points at it.
    Refuses, before writing anything, to overwrite an existing file: raises FileExistsError.
    """
    for address in addresses:
        parse_address(address)
    out = Path(directory)
    paths = [out / f"node{k}.toml" for k in range(1, len(addresses) + 1)]
    key_path = out / SECRET_FILE_NAME
    existing = [p for p in [*paths, *([key_path] if secret else [])] if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite {', '.join(map(str, existing))}")
    raft_values: dict[str, Any] = {}
    if all(is_loopback(parse_address(a)[0]) for a in addresses):
        raft_values["max_datagram_bytes"] = LOOPBACK_DATAGRAM_BYTES
    raft_values.update(raft or {})
    out.mkdir(parents=True, exist_ok=True)
    if secret is not None:
        # Created private (O_EXCL, 0600): the key is never readable by others, not even briefly.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret + b"\n")
    for k, (path, address) in enumerate(zip(paths, addresses, strict=True), start=1):
        # "x" mode: a file that appeared since the check above is still never clobbered.
        with open(path, "x", encoding="utf-8") as f:
            f.write(render_node_config(address, f"data/n{k}", addresses, raft_values,
                                       secret_file=SECRET_FILE_NAME if secret else None))
    return paths


def new_secret() -> bytes:
    """A fresh cluster secret: 256 random bits as 64 hex digits (printable, easy to copy)."""
    return secrets.token_hex(32).encode()
