"""`bodymap params check [FILE]` and `bodymap params defaults`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from bodymap.cli_options import common_options
from bodymap.config import default_params_dict, load_params

# The params command reads its own file argument instead of the common --params option.
OWN_PARAMS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    check = sub.add_parser(
        "check", help="validate a params file (default: params.yaml); exit 2 if invalid", parents=[common_options()]
    )
    check.add_argument("file", nargs="?", type=Path, default=None, help="params file to check")
    sub.add_parser("defaults", help="print the built-in default params as YAML", parents=[common_options()])


def main(args: argparse.Namespace, params: None = None) -> int:
    if args.action == "defaults":
        sys.stdout.write(yaml.safe_dump(default_params_dict(), sort_keys=False))
        return 0
    path = args.file or args.params or Path("params.yaml")
    load_params(path, args.overrides)
    print(f"{path}: ok")
    return 0
