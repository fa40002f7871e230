"""Output that scripts can trust: keys on one line each, JSON that is JSON, bad --json input.

Pure functions of raftctl.output.rows, and ``set --json`` refusals, which happen before any
request (the endpoint refuses connections). The same against real nodes, and stdout that
cannot be written, are in tests/integration/test_cli_output_failures.py.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from raftctl import Item
from raftctl.cli import cli
from raftctl.exitcodes import ExitCode
from raftctl.localcluster import free_ports
from raftctl.output.rows import item_cells, key_text, to_json
from tests.unit.cli.readers import read_key, strict_json


@given(st.text(min_size=1))
def test_every_key_reads_back_from_one_printable_cell(key: str) -> None:
    cell = key_text(key)
    assert cell.isprintable()  # so no tab, no line break, nothing invisible
    assert read_key(cell) == key


@pytest.mark.parametrize(
    "key", ["plain", "a b", "é/ü/日本", r"dir\file", 'say "hi"', "a=b;c", "-", "nl/x"]
)
def test_ordinary_keys_print_as_they_are(key: str) -> None:
    assert key_text(key) == key


@pytest.mark.parametrize(
    "key,cell",
    [
        ("nl/a\nb", r'"nl/a\nb"'),
        ("nl/c\td", r'"nl/c\td"'),
        ("esc\x1b[31m", r'"esc\u001b[31m"'),
        ("del\x7f", r'"del\u007f"'),
        ("zero\u200bwidth", r'"zero\u200bwidth"'),
        ("nb\u00a0sp", r'"nb\u00a0sp"'),
        ("tag\U000e0001", r'"tag\udb40\udc01"'),
        ('"quoted"', r'"\"quoted\""'),
        ("é\n", r'"é\n"'),  # printable characters stay readable inside the quotes
    ],
)
def test_keys_with_invisible_characters_or_a_leading_quote_print_as_json(
    key: str, cell: str
) -> None:
    assert key_text(key) == cell


def test_item_cells_escape_keys_and_values_alike() -> None:
    item = Item("k\tx", "v\ty", 7)
    assert item_cells(item) == (r'"k\tx"', r'"v\ty"', "7")
    assert item_cells(item, values=False) == (r'"k\tx"', "7")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


def untagged(value: Any) -> Any:
    """What `to_json` should render, as Python: tags for non-finite floats and raw bytes."""
    if isinstance(value, float) and not math.isfinite(value):
        name = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return {"float": name}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [untagged(item) for item in value]
    if isinstance(value, dict):
        return {key: untagged(item) for key, item in value.items()}
    return value


@given(json_values)
def test_to_json_is_always_strict_json(value: Any) -> None:
    assert strict_json(to_json(value)) == untagged(value)


@pytest.mark.parametrize(
    "value,expected",
    [
        (math.nan, '{"float": "NaN"}'),
        (math.inf, '{"float": "Infinity"}'),
        (-math.inf, '{"float": "-Infinity"}'),
        ([1.5, -math.inf], '[1.5, {"float": "-Infinity"}]'),
        ({"a": (math.nan,)}, '{"a": [{"float": "NaN"}]}'),
    ],
)
def test_non_finite_floats_are_tagged_like_bytes(value: Any, expected: str) -> None:
    assert to_json(value) == expected


@pytest.mark.parametrize(
    "value,message",
    [
        ("NaN", "not valid JSON: JSON has no NaN"),
        ("Infinity", "not valid JSON: JSON has no Infinity"),
        ("-Infinity", "not valid JSON: JSON has no -Infinity"),
        ('{"a": [1, NaN]}', "not valid JSON: JSON has no NaN"),
        ("1e400", "number out of range of a 64-bit float: 1e400"),
        ("-1e400", "number out of range of a 64-bit float: -1e400"),
        ('[0.5, 2E+999]', "number out of range of a 64-bit float: 2E+999"),
    ],
)
@pytest.mark.parametrize("from_stdin", [False, True], ids=["argument", "stdin"])
def test_set_json_refuses_what_json_cannot_hold(
    value: str, message: str, from_stdin: bool
) -> None:
    endpoint = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens: refused before any request
    args = ["-e", endpoint, "set", "--json", "k", *(["-"] if from_stdin else ["--", value])]
    result = CliRunner().invoke(cli, args, input=value if from_stdin else None)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr.splitlines()[-1] == f"Error: Invalid value for 'VALUE': {message}"

