"""The bottom layer, shared by everything above it: the data pipeline, logging, checkpoints, the runtime (devices,
processes), costs and plots. It imports no other ``reid`` package (``tests/test_layers.py`` checks)."""
