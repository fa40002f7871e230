"""Generated files and docs must match the click trees they describe.

man/ and completions/ are produced by raftctl.manpage; README.md is written by hand but must
mention every command, option, environment variable and config key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import click
import pytest

from raftctl.manpage import PAGES, ROOT, Page, generated, walk
from raftd.config import KEYS

REGENERATE = "run `make man` (python -m raftctl.manpage --write) and commit the result"
GENERATED = generated()


@pytest.mark.parametrize("path", sorted(GENERATED), ids=str)
def test_generated_file_is_current(path: Path) -> None:
    committed = ROOT / path
    if not committed.is_file():
        pytest.fail(f"{path} is missing: {REGENERATE}")
    current = committed.read_text(encoding="utf-8")
    if current != GENERATED[path]:
        diff = difflib.unified_diff(
            current.splitlines(), GENERATED[path].splitlines(), "committed", "now", lineterm=""
        )
        pytest.fail(f"{path} is stale: {REGENERATE}\n" + "\n".join(list(diff)[:40]))


def _mentions(text: str, word: str) -> bool:
    # An option like -e must stand alone, not inside "make-e" or "--endpoints".
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def _surface(command: click.Command, name: str) -> list[str]:
    """Every command path, option string and environment variable of a click tree."""
    ctx = command.make_context(name, [], resilient_parsing=True)
    words = []
    for cmd, cmd_ctx in [(command, ctx), *walk(command, ctx)]:
        if cmd is not command:
            words.append(cmd_ctx.command_path)
        for param in cmd.get_params(cmd_ctx):
            if isinstance(param, click.Option):
                words.extend(param.opts + param.secondary_opts)
                if isinstance(param.envvar, str):
                    words.append(param.envvar)
    return sorted(set(words))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_readme_mentions_every_command_and_option(page: Page) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [w for w in _surface(page.command, page.name) if not _mentions(readme, w)]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"


def test_readme_mentions_every_config_key() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"[{k.section}] {k.key}" for k in KEYS if not _mentions(readme, k.key)]
    assert not missing, f"README.md's configuration reference lacks: {', '.join(missing)}"


def test_readme_starts_with_make_demo_and_make_test() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:15]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)
