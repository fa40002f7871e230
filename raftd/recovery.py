"""Disaster recovery: a data dir for a new cluster from a backup, or from one lone survivor.

Both produce the same thing: a data dir holding a snapshot whose configuration names the new
cluster's voters, and a hard state, so that ``raftd start`` finds a node that is not blank
(it must not probe or bootstrap from its config file; see ``raftd.core.bootstrap``) and whose
configuration comes from the snapshot, as always (never from config files).

``restore_backup`` (``raftd restore FILE --data-dir DIR``) is safe: it builds a *new* cluster.
Every node of it is restored from the same file with the same members, so all of them start
with the same snapshot at (index, term) and elect a leader in a later term; the current term
is set to the backup's term so those elections never reuse a term below the snapshot's.

``force_new_cluster`` (``raftd start --force-new-cluster``) is UNSAFE by design, for when a
majority is lost for good. The commit index is not durable, so the survivor cannot know which
of its entries were committed; it treats *every* entry of its log as committed. Entries that
the old cluster never committed (and whose clients got an error or no answer) may therefore
reappear, and entries committed by a majority that this node never received are lost. That is
the price of getting the data back at all; it is logged loudly. The old members must never
rejoin with their old data dirs: wipe them and add them back with ``raftctl add-node``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from raftd import backup
from raftd.config import NodeConfig, parse_address
from raftd.core.confchange import ConfChange, apply_change
from raftd.core.errors import RaftError
from raftd.core.state import ConfState, EntryType, HardState, Snapshot, SnapshotMeta
from raftd.statemachine import DictStateMachine
from raftd.storage import hardstate, snapshots
from raftd.storage.disk import LOCK_NAME, DiskStorage
from raftd.storage.files import OsFileSystem

log = logging.getLogger(__name__)

APPLY_BATCH_ENTRIES = 1024
"""Entries read from storage at a time while replaying the log (bounds memory)."""


class RecoveryError(Exception):
    """Recovery cannot proceed; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a recovery wrote, for the operator's summary."""

    index: int
    term: int
    voters: tuple[str, ...]
    keys: int
    state_hash: str


# -- raftd restore ---------------------------------------------------------------------------------


def restore_backup(path: str, data_dir: str, members: tuple[str, ...] | None = None) -> Recovered:
    """Create ``data_dir`` for a node of a new cluster from the backup at ``path``.

    ``members``: the new cluster's voters (default: the voters the backup records). Learners
    of the old cluster are not carried over: they belong to it, not to the new one.
    Raises RecoveryError, or BackupError when the file is not a valid backup.
    """
    voters = _check_members(members) if members else None
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        raise RecoveryError(
            f"data dir {data_dir} is not empty: restore only creates a new data dir "
            f"(move the old one away first)"
        )
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise RecoveryError(f"data dir {data_dir} is not a directory")
    saved = backup.load(path)
    state = _state_of(saved.data, path)
    voters = voters or saved.voters
    meta = SnapshotMeta(saved.index, saved.term, ConfState(voters=voters))
    fs = OsFileSystem()
    try:
        fs.makedirs(data_dir)
        fs.fsync_dir(os.path.dirname(os.path.abspath(data_dir)))
        # Held while writing, so a raftd started on this dir meanwhile cannot see it half made.
        lock = fs.lock(os.path.join(data_dir, LOCK_NAME))
        try:
            snapshots.write(fs, data_dir, meta, (saved.data,))
            # Written last: a crash before it leaves a snapshot without hard state, which
            # DiskStorage reads as "not blank, never voted", equally correct.
            hardstate.save(fs, data_dir, HardState(current_term=saved.term))
        finally:
            lock.release()
    except OSError as e:
        raise RecoveryError(f"cannot write data dir {data_dir}: {e.strerror or e}") from None
    log.info(
        "restored %s into %s: snapshot at index %d (term %d), %d keys, state hash %s; voters %s",
        path, data_dir, saved.index, saved.term, len(state.data), state.digest(), ",".join(voters),
    )
    return Recovered(saved.index, saved.term, voters, len(state.data), state.digest())


def _check_members(members: tuple[str, ...]) -> tuple[str, ...]:
    for address in members:
        try:
            parse_address(address)
        except ValueError as e:
            raise RecoveryError(f"--members: bad address {address!r}: {e}") from None
    if len(set(members)) != len(members):
        raise RecoveryError(f"--members lists an address twice: {','.join(members)}")
    return tuple(sorted(members))


def _state_of(data: bytes, origin: str) -> DictStateMachine:
    """The state machine the snapshot data describes; RecoveryError if it does not parse (a
    backup that verifies but cannot be restored must not produce a node that fails later)."""
    state = DictStateMachine()
    try:
        state.restore(data)
    except Exception as e:  # noqa: BLE001 - any decoding failure means the same to the operator
        raise RecoveryError(f"{origin}: the state in the backup cannot be read: {e!r}") from None
    return state


# -- raftd start --force-new-cluster ---------------------------------------------------------------


def force_new_cluster(config: NodeConfig) -> Recovered:
    """Turn this node's data dir into a one-member cluster holding all of its data (UNSAFE).

    Applies every entry of the local log (committed or not) on top of the latest snapshot,
    writes a snapshot at the last index with this node as the only voter, and restarts the log
    after it. Run before ``raftd.server.run``; RecoveryError if there is nothing to recover.
    """
    me = config.node.address
    data_dir = str(config.node.data_dir)
    storage = DiskStorage(
        OsFileSystem(), data_dir, conf_state=ConfState(voters=tuple(config.cluster.members)),
        fsync=True,
    )
    try:
        hs, conf = storage.initial_state()
        snap_meta = storage.snapshot_meta()
        last = storage.last_index()
        if hs is None or last == 0:
            raise RecoveryError(f"data dir {data_dir} holds no data: there is nothing to recover")
        state = _state_machine(config)
        if snap_meta.index:
            state.restore(storage.snapshot().data)
        conf, applied = _replay(storage, state, conf, snap_meta.index, last)
        term = storage.term(last)
        log.warning(
            "FORCE-NEW-CLUSTER: %s becomes the only member of a new cluster. Snapshot at index "
            "%d, then %d log entries (%d..%d) applied as if committed, though some may never "
            "have been; the old configuration was voters %s, learners %s",
            me, snap_meta.index, applied, snap_meta.index + 1, last,
            ",".join(conf.voters) or "none", ",".join(conf.learners) or "none",
        )
        meta = SnapshotMeta(last, term, ConfState(voters=(me,)))
        data = b"".join(state.capture().chunks())
        if last > snap_meta.index:
            storage.apply_snapshot(Snapshot(meta, data))  # writes the WAL restart record too
        else:
            # Nothing after the snapshot: replace it by one of the same position (an atomic
            # rename onto the same name) that differs only in its configuration.
            snapshots.write(OsFileSystem(), data_dir, meta, (data,))
        # A node catching up never campaigns: as the only member it must. Its term stays, so
        # it never reuses a term in which it may have voted.
        storage.set_hard_state(HardState(current_term=max(hs.current_term, term),
                                         voted_for=hs.voted_for))
        storage.sync()
    finally:
        storage.close()
    log.warning(
        "FORCE-NEW-CLUSTER: wrote a snapshot at index %d (term %d) with voters %s and no "
        "learners; %d keys, state hash %s. Do NOT restart the old members with their old data "
        "dirs: wipe them and add them with `raftctl add-node`",
        last, term, me, len(state.data), state.digest(),
    )
    return Recovered(last, term, (me,), len(state.data), state.digest())


def _state_machine(config: NodeConfig) -> DictStateMachine:
    """A state machine holding the replicated state of every application the config enables,
    as the server's does (``raftd.apps.hosted_apps``): without it their snapshot records and
    log commands would be dropped from the new snapshot."""
    state = DictStateMachine()
    if config.federated.enabled:
        from raftd.federated.state import (  # stdlib only, no extra
            APP_NAME,
            FederatedState,
        )

        state.register_app(APP_NAME, FederatedState())
    return state


def _replay(
    storage: DiskStorage, state: DictStateMachine, conf: ConfState, after: int, last: int
) -> tuple[ConfState, int]:
    """Apply entries ``after + 1 .. last`` to ``state`` as the replica would once committed;
    returns the configuration they lead to and how many entries were applied."""
    applied = 0
    index = after + 1
    while index <= last:
        batch = storage.entries(index, min(index + APPLY_BATCH_ENTRIES, last + 1))
        for entry in batch:
            if entry.type is EntryType.CONF_CHANGE:
                try:
                    conf = apply_change(conf, ConfChange.decode(entry.data))
                except RaftError:
                    pass  # the core ignores a change that does not apply; so does recovery
            elif entry.data:  # an empty entry is a leader's no-op
                state.apply_batch(entry.data)
            applied += 1
        index += len(batch)
    return conf, applied
