"""Shared pytest configuration.

Hypothesis profiles: "ci" (the default) is derandomized with no deadline, so a run is
reproducible and never flaky on a slow machine; "explore" draws fresh random examples, more of
them, to hunt for new failures locally (HYPOTHESIS_PROFILE=explore).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
