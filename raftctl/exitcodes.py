"""Exit statuses of `raftctl`, as documented in DESIGN.md, README.md and raftctl(1)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Each status carries its `meaning`, which raftctl(1) prints."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "Success."
    FAILED = (
        1,
        (
            "The key was not found, a condition failed, the cluster answered with an error "
            "(no leader, no quorum), or stdout could not be written."
        ),
    )
    USAGE = (
        2,
        "Usage error: unknown command or option, a bad value, or a value the cluster cannot "
        "hold.",
    )
    UNREACHABLE = (
        3,
        ("No node was reachable, or the request timed out; the message names the endpoints tried."),
    )
    # 128 + the signal number, as a shell reports a process the signal ended.
    INTERRUPTED = 130, "Interrupted (Ctrl-C, SIGINT); a write may or may not have been applied."
    PIPE_CLOSED = (
        141,
        "The reader of stdout went away (raftctl list | head -1); nothing more is printed.",
    )
    TERMINATED = (
        143,
        "Terminated (SIGTERM), after stopping the local nodes and load generators it started; "
        "a write may or may not have been applied.",
    )
