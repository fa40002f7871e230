"""Coverage-guided fuzzing of rafty's hostile-input entry points with atheris (libFuzzer).

    .venv/bin/pip install atheris                      # not a dependency: a long-run tool
    .venv/bin/python -m tests.fuzz.run TARGET [libFuzzer options]
    .venv/bin/python -m tests.fuzz.run peer -runs=1000000
    .venv/bin/python -m tests.fuzz.run client -max_total_time=600 tests/fuzz/corpus/client

TARGET is one of ``tests.fuzz.targets.TARGETS`` (peer, stream, request, client, fragments,
auth); ``all`` runs each in turn with the options given. Without a corpus directory the
run starts from ``targets.seeds()`` in ``$TMPDIR/rafty-fuzz/TARGET-VERSION`` (kept between
runs of the same seeds). A crash (an undocumented exception, or ``Crash``) stops the run and
leaves ``crash-<sha1>`` beside you: replay it with ``python -m tests.fuzz.run TARGET
crash-<sha1>``, then add the input to the unit tests.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["raftd"]):
    from tests.fuzz.targets import TARGETS, seeds


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in (*TARGETS, "all"):
        print(__doc__, file=sys.stderr)
        return 2
    name, options = argv[0], argv[1:]
    if name == "all":  # libFuzzer runs one target per process
        for target in TARGETS:
            code = subprocess.call([sys.executable, "-m", "tests.fuzz.run", target, *options])
            if code != 0:
                return code
        return 0
    if not any(not option.startswith("-") for option in options):
        # One corpus per version of the seeds: an older one holds datagrams that older seeds
        # sealed with the test key, which the auth target rightly lets through but cannot
        # tell from a forgery (it knows only what this version sealed).
        starting = seeds()
        version = hashlib.sha1(b"".join(sorted(starting))).hexdigest()[:12]
        corpus = Path(tempfile.gettempdir()) / "rafty-fuzz" / f"{name}-{version}"
        corpus.mkdir(parents=True, exist_ok=True)
        for seed in starting:
            (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        options = [*options, str(corpus)]
    atheris.Setup([sys.argv[0], *options], TARGETS[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
