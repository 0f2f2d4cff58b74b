"""The command line of every entry point: one-line errors and both spellings of each option, the hyphenated one
and the underscore one the authors' README types (``--data-dir``/``--data_dir``, ``--src-dataset``/
``--src_dataset``, ...)."""
from __future__ import annotations

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' error style: one line ``error: ...`` on stderr and exit status 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def _spellings(name: str) -> list[str]:
    """``--data-dir`` -> ["--data-dir", "--data_dir"] (one entry when the name has neither)."""
    body = name[2:]
    hyphen, underscore = body.replace("_", "-"), body.replace("-", "_")
    return ["--" + hyphen] if hyphen == underscore else ["--" + hyphen, "--" + underscore]


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a number that must be above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add(group, name: str, *short: str, **kwargs) -> None:
    """``add_argument`` with both spellings of ``name``."""
    group.add_argument(*short, *_spellings(name), **kwargs)
