"""Output shaping (rows.py) and rendering (printers.py) for raftctl."""
