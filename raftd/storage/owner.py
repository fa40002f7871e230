"""The NODE file: which node a data dir belongs to.

A node's data dir holds its votes and its log, and both are promises made under its own id:
another node started on it (a ``data_dir`` pasted into the wrong config, a disk moved to
another machine) would inherit a vote record that is not its own and could vote twice in a
term, which breaks election safety. So the first start writes the node's id into ``NODE``,
and every later start refuses a dir whose ``NODE`` names another node. A dir without the
file (blank, restored by ``raftd restore``, or written before the file existed) is claimed.

Renaming a node is a membership change (add the new address with an empty dir, remove the
old one), never a rename of its dir: delete ``NODE`` only for a dir whose log is not needed.
"""

from __future__ import annotations

import os

from raftd.storage.files import FileSystem, replace_file

OWNER_FILE = "NODE"


class DataDirOwned(Exception):
    """The data dir belongs to another node (``owner``)."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def claim(fs: FileSystem, data_dir: str, node: str, *, force: bool = False) -> None:
    """Record ``node`` as the owner of ``data_dir`` unless it has one; raise
    ``DataDirOwned`` if the owner is another node (unless ``force``: a disaster recovery
    makes the dir this node's), ``OSError`` if the file cannot be read or written. The
    caller holds the dir's LOCK."""
    path = os.path.join(data_dir, OWNER_FILE)
    owner = fs.read(path).decode(errors="replace").strip() if fs.exists(path) else ""
    if owner == node:
        return
    if owner and not force:
        raise DataDirOwned(owner)
    replace_file(fs, data_dir, OWNER_FILE, f"{node}\n".encode(), "the data dir's owner")
