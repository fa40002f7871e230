"""Membership verbs: add-node, promote, remove-node, transfer-leader.

Each returns once the leader has applied the change. One change at a time: while another is
committing the request is retried until --timeout (conf_change_in_progress).
"""

from __future__ import annotations

import click

from raftctl.app import App
from raftctl.commands.params import node_address
from raftctl.options import VerbCommand


@click.command("add-node", cls=VerbCommand)
@click.argument("address", callback=node_address)
@click.option(
    "--learner",
    is_flag=True,
    help="Keep it a non-voting learner until `promote`; by default it is promoted by itself "
    "once its log is close to the leader's.",
)
@click.pass_obj
def add_node(app: App, address: str, learner: bool) -> None:
    """Add the node at ADDRESS (host:port) to the cluster.

    Start that node first, with an empty data dir and a config whose members do not list
    it: it waits, blank, for the leader to add it. It joins as a learner, receives the log,
    and becomes a voter (unless --learner). Exit status 1 if it is already a member.
    """
    with app.client() as client:
        client.add_node(address, learner=learner)
    app.printer.member("add-node", address)


@click.command(cls=VerbCommand, short_help="Make the learner at ADDRESS a voter.")
@click.argument("address", callback=node_address)
@click.pass_obj
def promote(app: App, address: str) -> None:
    """Make the learner at ADDRESS a voter, once it can vote safely: it answered within the
    last election timeout and its log is within promote_lag_entries of the leader's. Until
    then the cluster answers that it has not caught up yet, and the request is retried
    until --timeout. Exit status 1 if it is not a learner, or has not caught up by then."""
    with app.client() as client:
        client.promote(address)
    app.printer.member("promote", address)


@click.command("remove-node", cls=VerbCommand)
@click.argument("address", callback=node_address)
@click.pass_obj
def remove_node(app: App, address: str) -> None:
    """Remove the member at ADDRESS from the cluster.

    Removing the leader makes it hand leadership over first, once most of the remaining
    voters applied the change. The removed node stops taking part; stop its process
    afterwards. Exit status 1 if it is not a member (unless an earlier attempt of this
    command, whose answer was lost, removed it).
    """
    with app.client() as client:
        client.remove_node(address)
    app.printer.member("remove-node", address)


@click.command("transfer-leader", cls=VerbCommand,
               short_help="Hand leadership to ADDRESS or the most up-to-date voter.")
@click.argument("address", required=False, callback=node_address)
@click.pass_obj
def transfer_leader(app: App, address: str | None) -> None:
    """Hand leadership to the voter at ADDRESS, or to the most up-to-date one; print it.

    The leader waits for the target to catch up, then tells it to campaign at once, so
    there is no election timeout to wait for (before maintenance on the leader's host).
    A transfer to ADDRESS that did not complete (the target was still catching up, an
    election intervened) is tried again within --timeout. Exit status 1 if it did not
    complete in time.
    """
    with app.client() as client:
        leader = client.transfer_leader(address)
    app.printer.leader(leader)
