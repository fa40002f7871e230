"""``raftctl fl``: the participants' side of federated learning (``raftd.federated``).

Importing this package is cheap and needs no extra: the commands import numpy, scikit-learn
and cryptography (the ``rafty[federated]`` extra) only when they run.
"""
