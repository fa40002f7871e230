"""How a script reads raftctl's output, as the README documents it: strict JSON, and key
cells that are JSON strings when they start with a double quote."""

from __future__ import annotations

import json
from typing import Any


def strict_json(text: str) -> Any:
    """json.loads as JSON itself (and JavaScript's JSON.parse) reads it: no NaN, no Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def read_key(cell: str) -> str:
    """The documented rule for a key cell: JSON when it starts with a double quote."""
    return json.loads(cell) if cell.startswith('"') else cell
