"""Federated learning hosted by raftd: the Raft leader is a transient, rotating aggregator.

Theory of operation. Participants (``raftctl fl participate``, any number of processes) train
a small numpy model on their own data and send the cluster encrypted updates; the cluster
averages them and publishes the new global model through the replicated log:

- ``state``: the replicated part (an ``AppStateMachine``): the global model and its round,
  round records, participants' public keys, the current aggregator record and how many rounds
  each node aggregated. Updates themselves are never replicated: only their average is.
- ``coordinator``: the node-local part (a ``ServerApp``). The leader is the aggregator: it
  commits an aggregator record (term, node, round, public key) once elected, decrypts and
  validates updates, runs FedAvg, commits the round, and after ``rotate_after_s`` hands
  leadership to the next voter so that aggregation is shared. If it dies, the election that
  follows picks the next aggregator; a round it had not committed is simply redone.
- ``crypto`` (hybrid RSA-OAEP + AES-GCM), ``fedavg`` (validation and the weighted mean),
  ``model`` and ``data`` (numpy models, the digits data set) are pure helpers shared with the
  participants in ``raftctl.fl``.

Everything here but ``state`` needs the ``rafty[federated]`` extra (numpy, scikit-learn,
cryptography); ``raftd.apps`` imports it only when ``[federated] enabled = true``.
"""
