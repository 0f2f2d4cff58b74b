"""The options run.sh gives each stage, read from the profile files it sources (``profiles/*.sh``), so that the
benchmarks run exactly what run.sh runs."""
from __future__ import annotations

import subprocess
from pathlib import Path

from reid.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("MODEL", "SOURCE", "ADAPT", "SEMI")
# Sources the profile in bash and prints each array as NUL-separated words: name, length, values.
_PRINT_ARRAYS = 'source "$1"; for name in ' + " ".join(STAGES) + \
    '; do declare -n values=$name; printf "%s\\0" "$name" "${#values[@]}" "${values[@]}"; done'


def read_profile(name: str = "synthetic") -> dict[str, list[str]]:
    """The arrays MODEL, SOURCE, ADAPT and SEMI of ``profiles/<name>.sh``, as bash reads them."""
    path = ROOT / "profiles" / f"{name}.sh"
    result = subprocess.run(["bash", "-c", _PRINT_ARRAYS, "profile", str(path)], capture_output=True)
    if result.returncode != 0:
        raise UserError(f"{path}: bash could not read the profile ({result.stderr.decode().strip()})")
    words = result.stdout.decode().split("\0")[:-1]
    profile = {}
    while words:
        stage, count, words = words[0], int(words[1]), words[2:]
        profile[stage], words = words[:count], words[count:]
    return profile


def option_value(options: list[str], name: str) -> str:
    """The value after the last ``name`` in an option list (argparse keeps the last)."""
    positions = [i for i, option in enumerate(options) if option in (name, name.replace("-", "_"))]
    if not positions:
        raise UserError(f"the profile sets no {name}")
    return options[positions[-1] + 1]
