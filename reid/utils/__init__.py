"""Helpers shared by the scripts: data pipeline, logging, checkpoints, arguments, runtime."""
