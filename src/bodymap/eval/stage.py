"""`bodymap evaluate`: score prediction sets against ground truth; one flat metrics report for all of them.

Each `--eval NAME KIND GT PREDICTIONS [IMAGES]` is one evaluation set. NAME prefixes its metric keys and names its
output folder; it may be `model/set` (e.g. `bodymap/coco` and `cse/coco`) so one report compares models side by
side. KIND is `coco` (GT = a DensePose-COCO JSON), `dense` (GT = a split directory with gt/<id>.npz and optionally
annotations.json) or `video` (GT = a directory with gt/<seq>/<frame>.npz); IMAGES is where the RGB images lie,
only for the pictures (default: the JSON's folder, or the GT directory). Ground truth shared by several sets is read
once.

Writes into --out (atomically): `metrics.json` (flat, keys `<NAME>/<metric>`), `run.yaml`, and per set
`<NAME>/pr_<mode>.csv`, `<NAME>/pr.png`, `<NAME>/vis/*.png`. --metrics also copies metrics.json elsewhere (DVC).

Pipeline mode (`--model`) predicts before it scores, and the predictions grow with the data: `--shard i
--num-shards n --out SHARD` predicts every n-th batch of each set, `--merge SHARD... --out DIR` joins the shards
(the same files one process writes, `bodymap.shards`) and scores them; locally `evaluate.workers` processes do both.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bodymap.config import Params
from bodymap.data.sets import pipeline_sets
from bodymap.determinism import torch_threads
from bodymap.errors import BodymapError
from bodymap.eval.groundtruth import GT_KINDS
from bodymap.eval.pipeline import evaluate_pipeline, predict_report_sets, score_pipeline
from bodymap.eval.run import HEADLINE, EvalSpec, run_evaluation
from bodymap.io import atomic_path, write_json
from bodymap.shards import check_shard, merge_shards
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker

_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def parse_spec(items: list[str]) -> EvalSpec:
    """`NAME KIND GT PREDICTIONS [IMAGES]` -> EvalSpec, or a BodymapError saying what is wrong."""
    usage = "--eval expects NAME KIND GT PREDICTIONS [IMAGES]"
    if len(items) not in (4, 5):
        raise BodymapError(f"{usage}, got {len(items)} values: {' '.join(items)}")
    name, kind, gt, predictions, *images = items
    if not _NAME.match(name):
        raise BodymapError(f"--eval {name}: NAME must be /-separated parts of letters, digits, _ . - (bodymap/coco)")
    if kind not in GT_KINDS:
        raise BodymapError(f"--eval {name}: KIND must be one of {', '.join(GT_KINDS)}, got {kind!r}")
    return EvalSpec(name, kind, Path(gt), Path(predictions), Path(images[0]) if images else None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", type=Path, required=True, help="template directory (bodymap template --out)")
    parser.add_argument(
        "--eval",
        dest="eval_sets",
        action="append",
        nargs="+",
        default=[],
        metavar="ITEM",
        help="an evaluation set: NAME KIND GT PREDICTIONS [IMAGES], KIND one of coco, dense, video (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (metrics.json, PR curves, pictures)")
    parser.add_argument("--metrics", type=Path, default=None, help="also write the flat metrics here (DVC metrics)")
    pipeline = parser.add_argument_group(
        "pipeline mode",
        "instead of --eval: predict the test, held-out COCO and video sets with --model and score "
        "it next to the CSE baseline (what the `evaluate` stage runs)",
    )
    pipeline.add_argument("--model", type=Path, default=None, help="fine-tuned BodyMap checkpoint")
    pipeline.add_argument("--render", type=Path, default=None, help="render stage output")
    pipeline.add_argument("--cse", type=Path, default=None, help="cse_init outputs")
    pipeline.add_argument("--plots", type=Path, default=None, help="window-accuracy curves (CSV, DVC plots)")
    pipeline.add_argument(
        "--shard", type=int, default=None, help="predict only this shard of every set's batches into --out (0-based)"
    )
    pipeline.add_argument("--num-shards", type=int, default=1, help="with --shard: the number of shards")
    pipeline.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="SHARD_DIR",
        help="join these prediction shards (--shard runs) into --out, then score as one run does",
    )  # fmt: skip


def main(args: argparse.Namespace, params: Params) -> int:
    if args.model is not None:
        if args.render is None or args.cse is None or args.eval_sets:
            raise BodymapError("pipeline mode (--model) needs --render and --cse, and takes no --eval")
        if args.shard is not None:  # one shard of the predictions, scored after --merge
            check_shard(args.shard, args.num_shards)
            sets = pipeline_sets(args.render, params.data.coco)
            with torch_threads(params.evaluate.threads):
                predict_report_sets(
                    args.template, sets, args.cse, args.model, args.out, params.render.image_size,
                    shard=args.shard, num_shards=args.num_shards,
                )  # fmt: skip
            return 0
        tracker = Tracker()
        inputs = [args.template, args.render, args.cse, args.model.parent]
        with (
            tracker.run("evaluate", params=params.evaluate.model_dump(mode="json"), inputs=inputs),
            torch_threads(params.evaluate.threads),  # the predictions depend on the count
        ):
            if args.merge:
                merge_shards(args.merge, args.out / "predictions" / "bodymap", "predictions")
                flat = score_pipeline(
                    args.template, args.render, args.cse, args.model, args.out, params.evaluate, params.data.coco
                )
            else:
                flat = evaluate_pipeline(
                    args.template, args.render, args.cse, args.model, args.out,
                    params.evaluate, params.data.coco, params.render.image_size,
                )  # fmt: skip
            tracker.log_metrics({k: v for k, v in flat.items() if v is not None})
            tracker.log_artifact(args.out / "report")
        if args.plots is not None:
            with atomic_path(args.plots) as tmp:
                tmp.write_text((args.out / "report" / "window_accuracy.csv").read_text())
    else:
        if not args.eval_sets:
            raise BodymapError("give at least one --eval NAME KIND GT PREDICTIONS, or --model for pipeline mode")
        specs = [parse_spec(items) for items in args.eval_sets]
        template = BodyTemplate.load(args.template)
        flat = run_evaluation(template, specs, params.evaluate, args.out)
    if args.metrics is not None:
        write_json(args.metrics, flat)
    return 0


__all__ = ["HEADLINE", "EvalSpec", "add_arguments", "main", "parse_spec", "run_evaluation"]
