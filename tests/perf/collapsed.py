"""Summarize a py-spy ``record -f raw`` profile (collapsed stacks): where the time goes.

    py-spy record -p PID -f raw -o leader.txt --duration 20 --idle --nonblocking
    .venv/bin/python -m tests.perf.collapsed leader.txt [--top 25] [--under FUNC]

Prints the share of samples per function by *self* time (the sampled frame itself) and by
*inclusive* time (the function anywhere on the stack, counted once per sample), then per
source file. Idle samples (the event loop waiting in epoll) are reported apart, so the shares
of busy time add up. ``--under FUNC`` restricts everything to the samples whose stack
contains FUNC (e.g. ``_process`` for one runtime turn). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")
IDLE_LEAVES = ("run_forever", "select", "poll", "_run_once", "wait", "run (uvloop")


def parse(lines: Iterable[str]) -> Counter[tuple[str, ...]]:
    """Stacks (outermost first) -> sample counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def short(frame: str) -> str:
    """``func (path/to/raftd/core/raft.py:123)`` -> ``func (raftd/core/raft.py)``."""
    m = _FRAME.match(frame)
    if m is None:
        return frame
    path = m.group("file")
    for root in ("raftd/", "raftctl/", "site-packages/", "lib/python3"):
        if root in path:
            path = path[path.index(root):]
            break
    return f"{m.group('func')} ({path})"


def file_of(frame: str) -> str:
    m = _FRAME.match(frame)
    return short(frame).split(" (", 1)[1].rstrip(")") if m else frame


def is_idle(stack: Sequence[str]) -> bool:
    return not stack or any(key in stack[-1] for key in IDLE_LEAVES)


def summarize(stacks: Counter[tuple[str, ...]], top: int, under: str | None) -> str:
    if under is not None:
        stacks = Counter({s: n for s, n in stacks.items() if any(under in f for f in s)})
    total = sum(stacks.values())
    idle = sum(n for s, n in stacks.items() if is_idle(s))
    busy = total - idle
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for stack, n in stacks.items():
        if is_idle(stack):
            continue
        own[short(stack[-1])] += n
        files[file_of(stack[-1])] += n
        for frame in {short(f) for f in stack}:
            inclusive[frame] += n
    out = [f"{total} samples: {busy} busy ({100 * busy / max(total, 1):.1f}%), {idle} idle"
           + (f", restricted to stacks through {under!r}" if under else "")]
    for title, counter in (("self time", own), ("inclusive time", inclusive),
                           ("self time by file", files)):
        out.append(f"\n{title} (% of busy samples)")
        for name, n in counter.most_common(top):
            out.append(f"{100 * n / max(busy, 1):6.1f}%  {name}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.collapsed")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", help="only samples whose stack contains this text")
    args = parser.parse_args(argv)
    stacks = parse(args.profile.read_text().splitlines())
    print(summarize(stacks, args.top, args.under))
    return 0


if __name__ == "__main__":
    sys.exit(main())
