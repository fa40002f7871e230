"""Where ``raftd.backup.save`` writes, on a real temp dir: a regular file is replaced
atomically with mode 0600, a symlink is followed (the link stays), and a FIFO or a directory
is refused before anything is written. (Device nodes take the same path as the FIFO; /dev is
never touched by tests.)"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd import backup
from raftd.backup import BadTarget
from tests.unit.storage.test_recovery import sample


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: a mode the code asks for is the mode the file gets, 0644 included."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def kind(path: Path) -> str:
    """What ``path`` is, a symlink not followed; a file with its content."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return f"link -> {os.readlink(path)}"
    if stat.S_ISFIFO(st.st_mode):
        return "fifo"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return f"file {path.read_bytes()!r}"


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` and what it is."""
    return {str(p.relative_to(root)): kind(p) for p in sorted(root.rglob("*"))}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The temp dir with no symlink in its own path, so only the test's links show."""
    return tmp_path.resolve()


@pytest.mark.usefixtures("open_umask")
def test_a_new_and_a_replaced_file_have_mode_0600(root: Path) -> None:
    new = root / "new.rafty"
    assert backup.save(str(new), sample()) == new.stat().st_size
    assert mode(new) == 0o600 and backup.load(str(new)) == sample()

    old = root / "old.rafty"
    old.write_bytes(b"previous backup")
    old.chmod(0o644)
    backup.save(str(old), sample())
    assert mode(old) == 0o600 and backup.load(str(old)) == sample()
    assert sorted(p.name for p in root.iterdir()) == ["new.rafty", "old.rafty"]


def test_a_symlink_is_followed_and_stays_a_link(root: Path) -> None:
    (root / "real").mkdir()
    link = root / "link.rafty"
    link.symlink_to("real/backup.rafty")  # relative, dangling: the target is created
    backup.save(str(link), sample())
    assert link.is_symlink() and os.readlink(link) == "real/backup.rafty"
    written = root / "real" / "backup.rafty"
    assert written.is_file() and not written.is_symlink() and mode(written) == 0o600
    assert backup.load(str(written)) == sample()
    assert [p.name for p in (root / "real").iterdir()] == ["backup.rafty"]  # no temp file

    other = backup.Backup(index=13, term=3, voters=sample().voters, learners=(), data=b"")
    chained = root / "chained.rafty"
    chained.symlink_to(link)  # a link to the link: followed to the end, both stay links
    backup.save(str(chained), other)
    assert chained.is_symlink() and link.is_symlink()
    assert backup.load(str(written)) == other
    assert sorted(p.name for p in root.iterdir()) == ["chained.rafty", "link.rafty", "real"]


@pytest.mark.parametrize("via_link", [False, True], ids=["direct", "via-symlink"])
def test_a_fifo_is_refused_and_left_alone(root: Path, via_link: bool) -> None:
    fifo = root / "fifo.rafty"
    os.mkfifo(fifo)
    path = fifo
    if via_link:
        path = root / "link.rafty"
        path.symlink_to(fifo.name)
    before = tree(root)
    with pytest.raises(BadTarget) as err:
        backup.save(str(path), sample())
    message = str(err.value)
    assert message.startswith(f"'{path}'") and message.endswith("is a FIFO, not a regular file")
    assert (f"(-> '{fifo}')" in message) == via_link and "\n" not in message
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert tree(root) == before  # no temp file, link untouched


@pytest.mark.parametrize("via_link", [False, True], ids=["direct", "via-symlink"])
def test_a_directory_is_refused_and_left_alone(root: Path, via_link: bool) -> None:
    directory = root / "dir.rafty"
    directory.mkdir()
    (directory / "keep").write_bytes(b"mine")
    path = directory
    if via_link:
        path = root / "link.rafty"
        path.symlink_to(directory)
    before = tree(root)
    with pytest.raises(BadTarget, match="is a directory, not a regular file"):
        backup.save(str(path), sample())
    assert tree(root) == before


def test_target_checks_without_writing(root: Path) -> None:
    (root / "real").mkdir()
    link = root / "link.rafty"
    link.symlink_to("real/b.rafty")
    assert backup.target(str(link)) == str(root / "real" / "b.rafty")
    os.mkfifo(root / "fifo")
    with pytest.raises(BadTarget, match="FIFO"):
        backup.target(str(root / "fifo"))
    assert tree(root) == {"fifo": "fifo", "link.rafty": "link -> real/b.rafty", "real": "dir"}
