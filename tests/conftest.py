"""Shared pytest configuration.

Hypothesis profiles: "ci" (the default) is derandomized with no deadline, so a run is
reproducible and never flaky on a slow machine; "explore" draws fresh random examples, more of
them, to hunt for new failures locally (HYPOTHESIS_PROFILE=explore).
"""

from __future__ import annotations

import os
import signal

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A run started in the background by a non-interactive shell (`make test &`, nohup) inherits
# SIGINT ignored, and every process it starts would too: the tests that type Ctrl-C at raftctl
# would then wait for nothing. A handled signal is reset to its default across exec, an
# ignored one is not, so give this process Python's handler back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
