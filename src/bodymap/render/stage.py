"""`bodymap render`: synthetic train/test images with dense GT, the coco-like split and video (see docs/formats.md).

On one machine `render.workers` processes share the work. On a cluster, `--shard i --num-shards n` renders every
n-th work unit into its own directory, and `--merge DIR... --out OUT` joins the shards afterwards; the result is
byte-identical to a single run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bodymap.config import Params
from bodymap.io import write_json
from bodymap.render.settings import build_settings
from bodymap.tracking import Tracker

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", type=Path, required=True, help="template directory (`bodymap template --out`)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    parser.add_argument("--metrics", type=Path, default=None, help="also write the run's figures here (DVC metrics)")
    parser.add_argument("--shard", type=int, default=0, help="render only this shard of the work (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of shards the work is split into")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="SHARD_DIR", help="join these shard outputs into --out"
    )


def main(args: argparse.Namespace, params: Params) -> int:
    from bodymap.render.run import merge_shards, render_dataset  # torch, Warp and Anny load only when rendering

    settings = build_settings(params.render)
    tracker = Tracker()
    with tracker.run("render", params=params.render.model_dump(mode="json"), inputs=[args.template]):
        if args.merge:
            figures = merge_shards(args.merge, args.out, args.template, settings.contact_sheet)
        else:
            figures = render_dataset(settings, args.template, args.out, args.shard, args.num_shards)
        tracker.log_metrics({k: v for k, v in figures.items() if isinstance(v, int | float)})
        tracker.log_artifact(args.out / "contact_sheet.png")
    if args.metrics is not None:
        write_json(args.metrics, figures)
    log.info("render written to %s: %s", args.out, figures)
    return 0


__all__ = ["add_arguments", "main"]
