"""`python -m raftctl` runs the same command as the `raftctl` console script."""

from raftctl.cli import main

main()
