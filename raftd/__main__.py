"""`python -m raftd` runs the same command as the `raftd` console script."""

from raftd.cli import main

main()
