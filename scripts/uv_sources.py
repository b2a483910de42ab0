"""Print the `uv pip install` flags for the package sources pip is configured with.

`make` installs with uv (it unpacks and byte-compiles in parallel: about a minute here where pip took three), but
uv does not read pip's configuration. This reads `pip config list` (files and PIP_* variables) and prints, one
per line, the uv flags for the same index URLs, extra indexes, find-links and constraint files, so both installers
see the same packages. pip picks the best version across all its indexes; `--index-strategy unsafe-best-match`
asks uv to do the same.

Usage: python scripts/uv_sources.py   (the `python` whose pip configuration applies)
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip option -> uv flag; each value may hold several whitespace-separated entries, as in pip's config files.
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}
# Where a key is set more than once, pip uses the most specific: a PIP_* variable over `install` over `global`.
PRECEDENCE = {"global": 0, "install": 1, ":env:": 2}


def pip_config() -> dict[str, str]:
    """{option: value} of pip's effective configuration for `pip install`."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    chosen: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        name, sep, value = line.partition("=")
        section, _, option = name.rpartition(".")
        if not sep or section not in PRECEDENCE:
            continue
        rank = PRECEDENCE[section]
        if option not in chosen or rank >= chosen[option][0]:
            chosen[option] = (rank, ast.literal_eval(value))
    return {option: value for option, (_, value) in chosen.items()}


def uv_flags(config: dict[str, str]) -> list[str]:
    """uv flags for the sources in a pip configuration."""
    flags = ["--index-strategy", "unsafe-best-match"]
    for option, flag in FLAGS.items():
        for entry in config.get(option, "").split():
            flags += [flag, entry]
    if "cert" in config:
        flags.append("--native-tls")  # pip was given a CA bundle: let uv use the system's certificates too
    return flags


if __name__ == "__main__":
    print("\n".join(uv_flags(pip_config())))
