"""The argparse options several commands share (pipeline paths, `--restart`, `--params`/`--set`) and how the
params they name are resolved. Below the stage modules and `bodymap.cli`, so a stage never imports the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from bodymap.config import Params, load_params

# Pipeline paths several stage commands read, with one help text each (`add_stage_inputs`).
STAGE_INPUTS = {
    "template": "template artifact directory (`bodymap template --out`)",
    "render": "render stage output directory",
    "cse": "cse_init outputs (one subdirectory per image set)",
    "pseudo_gt": "pseudo_gt outputs (dense/, sparse/, flow/)",
}


def add_stage_inputs(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add required `--template`, `--render`, `--cse`, `--pseudo-gt` path options (those named)."""
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=STAGE_INPUTS[name])


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """`--restart` for the commands that train (cse_init, pretrain, finetune): by default they resume the
    checkpoint in --model-dir (or on the store, for an s3:// --model-dir) and refuse one from another run."""
    parser.add_argument(
        "--restart",
        action="store_true",
        help="train from step 0 even when --model-dir holds a checkpoint (it is replaced); default: resume it",
    )


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--params", type=Path, default=None, help="params file (default: ./params.yaml if present, else built-in)"
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set render.image_size=128 (repeatable)",
    )
    group.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return common


def resolve_params(params_path: Path | None, overrides: list[str]) -> Params:
    """Params from the given file, else ./params.yaml when present, else the built-in defaults; then overrides."""
    if params_path is None and Path("params.yaml").exists():
        params_path = Path("params.yaml")
    return load_params(params_path, overrides)
