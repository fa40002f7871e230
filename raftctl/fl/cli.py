"""The ``raftctl fl`` group: split, participate, status, demo.

numpy, scikit-learn and cryptography are imported inside the commands, so ``raftctl`` itself
runs without the ``rafty[federated]`` extra; an fl command without it exits 2 with one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from raftctl.app import App
from raftctl.exitcodes import ExitCode
from raftctl.options import VerbGroup
from raftctl.output.printers import echo
from raftd.federated.state import DEFAULT_STATUS_ROUNDS

EXTRA = "pip install 'rafty[federated]'"
MODELS = ("softmax", "mlp")
MAX_RECENT = DEFAULT_STATUS_ROUNDS
"""Most round records `fl status --rounds` shows: what fl_status returns by default."""
DEMO_MIN_SERVERS = 3
"""With fewer nodes, the survivors of the aggregator's SIGKILL are no majority."""


def _need_extra(app: App) -> None:
    """Abort with one line when the federated extra is missing."""
    for module in ("numpy", "sklearn", "cryptography"):
        try:
            __import__(module)
        except ImportError:
            app.abort(ExitCode.USAGE, f"raftctl fl needs the federated extra ({EXTRA}): "
                                      f"{module} is not installed")


@click.group(cls=VerbGroup, short_help="Federated learning, with the cluster as aggregator.")
def fl() -> None:
    """Federated learning: participants train on their own data; the cluster aggregates.

    The Raft leader is the aggregator for a while (see [federated] in raftd(8)): it collects
    encrypted model updates, averages them (FedAvg) and commits the new global model to the
    replicated log; leadership rotates among the nodes, and when the aggregator dies the
    next leader carries on. Needs the rafty[federated] extra.
    """


@fl.command(short_help="Split the bundled digits data set into participant shards.")
@click.option("--parts", "-n", type=click.IntRange(min=1), required=True, metavar="N",
              help="Number of participant shards to write.")
@click.option("--iid", is_flag=True, help="Deal examples uniformly at random (the default).")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), metavar="ALPHA",
              help="Label skew instead: Dirichlet(ALPHA) shares of each class per shard "
              "(0.1 very skewed, 100 nearly IID).")
@click.option("--seed", type=int, default=0, show_default=True, metavar="N",
              help="Seed of the split.")
@click.option("--test-fraction", type=click.FloatRange(0.05, 0.5), default=0.2,
              show_default=True, metavar="FRACTION", help="Share of the data held out as test.npz.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, metavar="DIR", help="Directory to write shardK.npz and test.npz into.")
@click.pass_obj
def split(app: App, parts: int, iid: bool, alpha: float | None, seed: int,
          test_fraction: float, out_dir: Path) -> None:
    """Split scikit-learn's bundled digits data set into participant shards.

    Writes shard1.npz ... shardN.npz (one per participant) and a held-out test.npz into
    --out, and prints each shard's size and how many of the 10 classes it holds.
    """
    _need_extra(app)
    if iid and alpha is not None:
        raise click.UsageError("--iid and --alpha exclude each other")
    from raftd.federated.data import write_split

    try:
        result = write_split(out_dir, parts, alpha=alpha, seed=seed, test_fraction=test_fraction)
    except (ValueError, OSError) as exc:
        app.abort(ExitCode.FAILED, str(exc))
    rows = [{"shard": str(p), "examples": n, "classes": c}
            for p, n, c in zip(result.shards, result.sizes, result.classes, strict=True)]
    _print_rows(app, ["shard", "examples", "classes"], rows)
    click.echo(f"test set: {result.test}", err=True)


@fl.command(short_help="Train on a shard until the global model reaches --rounds.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="This participant's shard (from `raftctl fl split`).")
@click.option("--test", "test_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out data to test each global model on; the cluster reports the "
              "accuracy in `raftctl fl status`.")
@click.option("--name", metavar="NAME",
              help="Participant name, unique in the cluster [default: host-pid].")
@click.option("--rounds", type=click.IntRange(min=1), default=30, show_default=True,
              metavar="N", help="Stop once the global model reaches this round.")
@click.option("--model", type=click.Choice(MODELS), default="softmax", show_default=True,
              help="Model to propose if the cluster trains none yet.")
@click.option("--hidden", type=click.IntRange(min=1), default=32, show_default=True,
              metavar="N", help="Hidden units of the mlp model.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              metavar="N", help="Local epochs per round.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, metavar="RATE", help="Learning rate of local SGD.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              metavar="N", help="Mini-batch size of local SGD.")
@click.option("--seed", type=int, default=0, show_default=True, metavar="N",
              help="Seed of the local batch order (and of the initial model).")
@click.pass_obj
def participate(app: App, data_path: Path, test_path: Path | None, name: str | None,
                rounds: int, model: str, hidden: int, epochs: int, lr: float, batch_size: int,
                seed: int) -> None:
    """Take part in federated training until the global model reaches --rounds.

    Registers a fresh public key, then each round fetches the global model (encrypted to
    that key), trains it on --data, and sends the update encrypted to the current
    aggregator's key. When the aggregator changes before the round is committed, the
    update is encrypted again to the new key and resent. Progress goes to stderr; the
    rounds contributed to stdout at the end.

    Elections, crashed nodes and a cluster without quorum (no leader) are waited out. Exit
    status 1 at once when the cluster answers with an error retrying cannot fix (such as no
    [federated] enabled, or a wrong --token); 3 once no node has answered for twice
    --timeout (checked after each request, which long-polls for up to 2 s).
    """
    _need_extra(app)
    from raftctl.client import AsyncClient
    from raftctl.fl.participant import WAIT_S, Participant, Training
    from raftd.federated.data import Shard
    from raftd.federated.model import ModelSpec

    try:
        shard = Shard.load(data_path)
        test = Shard.load(test_path) if test_path is not None else None
        spec = ModelSpec(kind=model, features=shard.X.shape[1],
                         classes=max(10, int(shard.y.max()) + 1), hidden=hidden, seed=seed)
    except ValueError as exc:
        app.abort(ExitCode.USAGE, str(exc))
    name = name or f"{socket.gethostname()}-{os.getpid()}"

    async def run() -> Any:
        # Long polls last WAIT_S: the deadline of one request must be longer. Giving up after
        # twice --timeout of silence leaves room for an election while a node is down.
        async with AsyncClient(app.endpoints, max(app.timeout, WAIT_S + 3),
                               **app.access) as client:
            participant = Participant(
                client, name, shard, spec=spec, test=test, give_up_s=2 * app.timeout,
                training=Training(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed),
                say=lambda line: click.echo(f"{name}: {line}", err=True))
            return await participant.run(rounds)

    stats = asyncio.run(run())
    summary = {"participant": name, "rounds": len(stats.rounds), "resent": stats.resent,
               "aggregators": sorted(stats.aggregators)}
    if app.output == "json":
        echo(json.dumps(summary))
    else:
        _print_rows(app, list(summary), [summary])


@fl.command()
@click.option("--rounds", "recent", type=click.IntRange(0, MAX_RECENT), default=0,
              show_default=True, metavar="N",
              help=f"Also show the last N round records (at most {MAX_RECENT}).")
@click.pass_obj
def status(app: App, recent: int) -> None:
    """Show the training: round, aggregator, updates, accuracy.

    Prints the round, the aggregator and its term, the updates received this round (of
    min_updates), the participants, the last test accuracy, and how many rounds each node
    aggregated. The leader answers; while no leader is known a node answers with its own
    possibly older view (STALE). -o json prints one object.
    """
    with app.client() as client:
        st = client.request({"type": "fl_status"})
    view = status_view(st)
    if app.output == "json":
        view["rounds"] = view["rounds"][-recent:] if recent else []
        echo(json.dumps(view))
        return
    agg = view["aggregator"] or {}
    acc = view["accuracy"]
    updates = "-" if view["updates"] is None else f"{view['updates']}/{view['min_updates']}"
    row = {"round": view["round"], "aggregator": agg.get("node", "-"),
           "term": agg.get("term", "-"), "updates": updates,
           "participants": view["participants"],
           "accuracy": "-" if acc is None else f"{acc['accuracy']:.4f} (round {acc['round']})",
           "stale": "yes" if view["stale"] else "no"}
    _print_rows(app, list(row), [row])
    shares = [{"node": node, "rounds aggregated": count}
              for node, count in view["aggregations"].items()]
    if shares:
        _print_rows(app, ["node", "rounds aggregated"], shares)
    if recent:
        records = [{k: r.get(k) for k in ("round", "node", "term", "updates", "examples",
                                          "accuracy")} for r in view["rounds"][-recent:]]
        _print_rows(app, ["round", "node", "term", "updates", "examples", "accuracy"], records)


def status_view(st: dict[str, Any]) -> dict[str, Any]:
    """The ``fl_status`` answer as JSON-friendly data: no key bytes, no envelope."""
    agg = st.get("aggregator")
    if agg is not None:
        agg = {k: v for k, v in agg.items() if k != "public_key"}
    keep = ("round", "spec", "participants", "participant_names", "aggregations", "accuracy",
            "rounds", "updates", "min_updates", "leader", "term", "stale", "accepting",
            "round_timeout_s", "rotate_after_s")
    return {"aggregator": agg, **{k: st.get(k) for k in keep}}


@fl.command(short_help="Run federated learning on this machine, round by round.")
@click.option("--servers", type=click.IntRange(min=1), default=3, show_default=True,
              metavar="N", help=f"raftd nodes to start: at least {DEMO_MIN_SERVERS} unless "
              "--no-kill.")
@click.option("--participants", type=click.IntRange(min=1), default=5, show_default=True,
              metavar="N", help="Participant processes to start, one shard each.")
@click.option("--rounds", type=click.IntRange(min=2), default=30, show_default=True,
              metavar="N", help="Rounds to train.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), metavar="ALPHA",
              help="Non-IID shards: Dirichlet(ALPHA) label skew (default: IID).")
@click.option("--model", type=click.Choice(MODELS), default="softmax", show_default=True,
              help="Model to train.")
@click.option("--rotate-after", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, metavar="SECONDS",
              help="Seconds each aggregator leads before it hands over ([federated] "
              "rotate_after_s of the nodes).")
@click.option("--no-kill", is_flag=True, help="Do not SIGKILL the aggregator mid-run.")
@click.pass_obj
def demo(app: App, servers: int, participants: int, rounds: int, alpha: float | None,
         model: str, rotate_after: float, no_kill: bool) -> None:
    """Run federated learning on this machine and show it round by round.

    Starts --servers raftd nodes and --participants `raftctl fl participate` processes in a
    temporary directory, prints a row per round (aggregator, updates, test accuracy, round
    time), SIGKILLs the aggregator once a third of the way through to show another node
    taking over, and ends with the federated model's accuracy next to a centralized model
    trained on the union of the shards. -e is ignored: the demo runs its own cluster.
    """
    if servers < DEMO_MIN_SERVERS and not no_kill:
        raise click.BadParameter(
            f"{servers} is too few: the demo SIGKILLs the aggregator, and the nodes left must "
            f"be a majority to elect the next one; give at least {DEMO_MIN_SERVERS}, or --no-kill",
            param_hint="'--servers'")
    _need_extra(app)
    from raftctl.fl.demo import DemoFailed, run_demo

    try:
        run_demo(app.console, servers=servers, participants=participants, rounds=rounds,
                 alpha=alpha, model=model, rotate_after_s=rotate_after,
                 kill_at=None if no_kill else max(1, rounds // 3))
    except DemoFailed as exc:
        app.abort(ExitCode.FAILED, str(exc))


def _print_rows(app: App, header: list[str], rows: list[dict[str, Any]]) -> None:
    """Rows as a rich table, tab-separated lines (plain) or a JSON array of objects."""
    if app.output == "json":
        echo(json.dumps(rows))
        return
    if app.output == "plain":
        for row in rows:
            echo("\t".join(str(row[h]) for h in header))
        return
    table = Table(*(h.upper() for h in header), box=None, pad_edge=False)
    for row in rows:
        table.add_row(*(str(row[h]) for h in header))
    app.console.print(table)
