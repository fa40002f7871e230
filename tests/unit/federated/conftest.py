"""The federated tests need the rafty[federated] extra (``make test`` installs it)."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = (
    ["test_*.py"]
    if any(importlib.util.find_spec(m) is None for m in ("numpy", "sklearn", "cryptography"))
    else []
)
