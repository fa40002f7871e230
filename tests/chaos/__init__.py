"""Real-process chaos: a linearizability checker, a network/process nemesis, and the test."""
