"""raftctl verbs, one module per group of verbs; `raftctl.cli` registers them."""
