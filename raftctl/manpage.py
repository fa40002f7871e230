"""Generate man pages and shell completions from the click command trees.

    python -m raftctl.manpage --write    # rewrite man/ and completions/ (or: make man)
    python -m raftctl.manpage --check    # exit 1 and name the stale files

The click definitions are the single source: help texts, options, defaults and environment
variables come from them, config keys from `raftd.config.KEYS`, exit statuses from
`ExitCode`. tests/unit/test_generated.py fails when the committed files drift
(httpie's extras/scripts/generate_man_pages.py does the same).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from raftctl.cli import cli as raftctl_cli
from raftctl.exitcodes import ExitCode
from raftctl.options import GlobalOption
from raftd import __version__
from raftd.cli import EXIT_FAILED, EXIT_USAGE
from raftd.cli import cli as raftd_cli
from raftd.config import KEYS, SECTIONS

ROOT = Path(__file__).resolve().parent.parent
SHELLS = {"bash": "bash", "zsh": "zsh", "fish": "fish"}


@dataclass(frozen=True)
class Page:
    name: str
    section: int
    command: click.Command
    exit_statuses: tuple[tuple[int, str], ...]
    extra: tuple[tuple[str, str], ...] = ()
    """(title, roff body) sections inserted after COMMANDS."""
    see_also: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# roff


def esc(text: str) -> str:
    """Escape text for roff: backslashes, minus signs, and control characters at line start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def paragraphs(help_text: str) -> Iterator[str]:
    """Roff for click help text: blank lines separate paragraphs; ``\\b`` keeps line breaks."""
    for block in inspect.cleandoc(help_text).split("\n\n"):
        if block.startswith("\b\n"):
            yield ".PP\n.nf\n" + esc(block[2:]) + "\n.fi"
        else:
            yield ".PP\n" + esc(" ".join(block.split()))


def options(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    help_option = command.get_help_option(ctx)
    for param in command.get_params(ctx):
        # Arguments are in the synopsis; --help and the global options (which may also follow
        # any command) are said once, for the top command.
        if isinstance(param, click.Argument) or (
            ctx.parent and (param is help_option or isinstance(param, GlobalOption))
        ):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out.append(f".TP\n\\fB{esc(names)}\\fR\n{esc(help_text)}")
    return out


def synopsis(command: click.Command, ctx: click.Context) -> str:
    return " ".join(command.collect_usage_pieces(ctx))


def walk(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """Every visible subcommand, depth first, in listing order."""
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
            yield sub, sub_ctx
            yield from walk(sub, sub_ctx)


def environment(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and isinstance(param.envvar, str):
            flag = max(param.opts, key=len)
            help_text = esc(param.help or "")
            out.append(f".TP\n.B {esc(param.envvar)}\nSets \\fB{esc(flag)}\\fR: {help_text}")
    return out


def render(page: Page) -> str:
    # make_context applies context_settings (e.g. -h for --help) as running the command does.
    ctx = page.command.make_context(page.name, [], resilient_parsing=True)
    first, _, rest = inspect.cleandoc(page.command.help or "").partition("\n\n")
    # The NAME line says what the first help line says after "raftctl: ".
    summary = " ".join(first.split()).split(": ", 1)[-1]
    lines = [
        f'.TH {page.name.upper()} {page.section} "" "rafty {__version__}" "rafty manual"',
        ".SH NAME",
        f"{page.name} \\- {esc(summary)}",
        ".SH SYNOPSIS",
        f".B {page.name}\n{esc(synopsis(page.command, ctx))}",
        ".SH DESCRIPTION",
        *paragraphs(rest),
        ".SH OPTIONS",
        *options(page.command, ctx),
        ".SH COMMANDS",
    ]
    for sub, sub_ctx in walk(page.command, ctx):
        path = sub_ctx.command_path
        lines.append(f'.SS "{esc(path)} {esc(synopsis(sub, sub_ctx))}"')
        lines.extend(paragraphs(sub.help or sub.short_help or ""))
        lines.extend(options(sub, sub_ctx))
    for title, body in page.extra:
        lines += [f".SH {title}", body]
    env = environment(page.command, ctx)
    if env:
        lines += [".SH ENVIRONMENT", *env]
    lines.append(".SH EXIT STATUS")
    for code, meaning in page.exit_statuses:
        lines.append(f".TP\n.B {code}\n{esc(meaning)}")
    if page.see_also:
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{ref}\\fR" for ref in page.see_also)]
    return "\n".join(lines) + "\n"


def config_reference() -> str:
    """The CONFIGURATION section of raftd(8): every key of the node config file."""
    out = [
        ".PP",
        esc(
            "raftd start reads one TOML file. Unknown sections or keys, wrong types and bad "
            "addresses stop the node with one line naming the key."
        ),
    ]
    for section in SECTIONS:
        out.append(f'.SS "[{section}]"')
        for spec in (s for s in KEYS if s.section == section):
            if spec.required:
                note = "Required."
            elif spec.default is None:
                note = "Unset by default."
            else:
                note = f"Default: {spec.default}."
            out.append(f".TP\n\\fB{esc(spec.key)}\\fR\n{esc(spec.doc)} {esc(note)}")
    return "\n".join(out)


RAFTCTL_EXAMPLES = """\
.PP
.nf
export RAFTCTL_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
raftctl set greeting hello
raftctl get greeting
date | raftctl set now \\-
raftctl set \\-\\-json config '{"replicas": 3}'
raftctl list
raftctl get \\-\\-prefix user/
raftctl \\-o json get counter          # {"key": ..., "value": ..., "revision": 7}
raftctl set counter 8 \\-\\-if\\-revision 7   # exit status 1 if someone wrote it since
raftctl delete greeting
raftctl status
raftctl status \\-\\-watch 1
raftctl \\-o json status
raftctl health
raftctl diagnostic 127.0.0.1:7002
raftctl add\\-node 127.0.0.1:7004
raftctl transfer\\-leader 127.0.0.1:7002
raftctl remove\\-node 127.0.0.1:7001
.fi"""

PAGES = (
    Page(
        "raftctl",
        1,
        raftctl_cli,
        tuple((int(code), code.meaning) for code in ExitCode),
        extra=(("EXAMPLES", RAFTCTL_EXAMPLES),),
        see_also=("raftd(8)",),
    ),
    Page(
        "raftd",
        8,
        raftd_cli,
        (
            (0, "The node stopped cleanly (SIGTERM or SIGINT), or init wrote its files."),
            (EXIT_FAILED, "The node failed while running, or init found files in the way."),
            (EXIT_USAGE, "Bad command line or bad config file (one line names the key)."),
        ),
        extra=(("CONFIGURATION", config_reference()),),
        see_also=("raftctl(1)",),
    ),
)


def completion(command: click.Command, prog: str, shell: str) -> str:
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(f"click has no completion for {shell}")
    complete = cls(command, {}, prog, f"_{prog.upper()}_COMPLETE")
    # The template itself; BashComplete.source() would also probe the local bash version.
    return complete.source_template % complete.source_vars()


def generated() -> dict[Path, str]:
    """Relative path -> content of every generated file."""
    files = {Path("man") / f"{p.name}.{p.section}": render(p) for p in PAGES}
    for page in PAGES:
        for shell, ext in SHELLS.items():
            script = completion(page.command, page.name, shell)
            files[Path("completions") / f"{page.name}.{ext}"] = script
    return files


def stale(root: Path = ROOT) -> list[Path]:
    """Generated files that are missing or differ under `root`."""
    return [
        path
        for path, text in generated().items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftctl.manpage", description=(__doc__ or "").split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite man/ and completions/")
    mode.add_argument("--check", action="store_true", help="exit 1 if any generated file is stale")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"stale: {path} (run `make man`)", file=sys.stderr)
        return 1 if paths else 0
    for path, text in generated().items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
