"""Hypothesis strategies shared by the wire tests: valid messages and arbitrary msgpack values."""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from hypothesis import strategies as st

from raftd.core.messages import TAGS, Message, MsgApp
from raftd.core.state import ConfState, Entry, EntryType, Snapshot, SnapshotMeta

ints = st.integers(min_value=0, max_value=2**63 - 1)
small_ints = st.integers(min_value=0, max_value=1000)
node_ids = st.text(min_size=1, max_size=255)

# Every msgpack type, including the awkward ones (bool vs int, huge and negative ints,
# lone surrogates are impossible here: msgpack str is UTF-8).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10) | st.binary(max_size=5), children, max_size=5),
    max_leaves=20,
)


@st.composite
def app_messages(draw: st.DrawFn) -> MsgApp:
    """A MsgApp obeying Log Matching: contiguous indexes, non-decreasing terms <= term."""
    term = draw(small_ints)
    prev_term = draw(st.integers(min_value=0, max_value=term))
    prev_index = draw(small_ints)
    entries = []
    entry_term = prev_term
    for offset, data in enumerate(draw(st.lists(st.binary(max_size=30), max_size=5))):
        entry_term = draw(st.integers(min_value=entry_term, max_value=term))
        etype = draw(st.sampled_from(EntryType))
        entries.append(Entry(entry_term, prev_index + 1 + offset, etype, data))
    return MsgApp(
        term=term,
        src=draw(node_ids),
        dst=draw(node_ids),
        prev_log_index=prev_index,
        prev_log_term=prev_term,
        entries=tuple(entries),
        leader_commit=draw(ints),
    )


snapshots = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=ints,
        term=ints,
        conf_state=st.builds(
            ConfState,
            voters=st.lists(node_ids, max_size=5).map(tuple),
            learners=st.lists(node_ids, max_size=3).map(tuple),
            auto_promote=st.lists(node_ids, max_size=3).map(tuple),
        ),
    ),
    data=st.binary(max_size=200),
)


def _generic(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls)
    kinds = {int: ints, bool: st.booleans(), str: node_ids, Snapshot: snapshots}
    kwargs = {f.name: kinds[hints[f.name]] for f in fields(cls)}
    return st.builds(cls, **kwargs)


def messages_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    return app_messages() if cls is MsgApp else _generic(cls)


messages: st.SearchStrategy[Message] = st.one_of([messages_of(cls) for cls in TAGS])
