"""Local engines: the real networks, run on this machine (GPU or CPU)."""
