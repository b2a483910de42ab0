"""Benchmark: what a refining model changes of its CSE input, pixel by pixel, and whether each change helps.

    .venv/bin/python benchmarks/against_input.py [--run .] [--split test] [--cm 10] [--model NAME=DIR ...]

BodyMap is trained to refine a CSE estimate, so its accuracy alone does not say whether it refines or copies. For
every GT foreground pixel of a rendered split of a finished `make run`, this compares the model's vertex with its
input's (`data/cse/<split>`), both scored as the `cm_<c>` metric of `bodymap evaluate` (right when within `--cm`
of the true vertex geodesically; background is a miss), and splits the difference between the two accuracies
into what the model fixed (input wrong, model right) and what it broke, by predicting background or another
vertex where the input was right. Shares are of all GT foreground pixels, so

    model = input + fixed - broken to background - broken to another vertex.

"keeps the input" is the share of pixels where the model's vertex (or background) is exactly the input's. Models:
BodyMap pretrained (`data/pretrain/predictions/<split>`) and registered
(`data/evaluation/predictions/bodymap/<split>`), and any `--model NAME=DIR` (a dense prediction set, e.g. a
learning-curve run's `evaluation/predictions/<split>`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bodymap.eval.accuracy import geodesic_error
from bodymap.template.geodesic import Geodesics

MODELS = {
    "BodyMap, pretrained": "data/pretrain/predictions/{split}",
    "BodyMap, registered": "data/evaluation/predictions/bodymap/{split}",
}
COLUMNS = [
    "input",
    "model",
    "keeps the input",
    "fixed",
    "broken to background",
    "broken to another vertex",
]


def _vertex(directory: Path, name: str) -> np.ndarray:
    path = directory / name
    if not path.is_file():
        raise SystemExit(f"{path}: missing; the prediction set must have one npz per GT image of the split")
    with np.load(path) as data:
        if "vertex" not in data.files:
            raise SystemExit(f"{path}: no 'vertex' array (expected the dense prediction format, [H, W] int32)")
        return data["vertex"]


def against_input(gt_dir: Path, inputs: Path, predictions: Path, geodesics: Geodesics, cm: float) -> dict[str, float]:
    """The shares (%) of `COLUMNS` over every GT foreground pixel of `gt_dir` (a split's `gt/*.npz`), for the input
    and model predictions of the same names (`vertex` [H, W], -1 for background)."""
    counts = dict.fromkeys(COLUMNS, 0)
    total = 0
    for gt_path in sorted(gt_dir.glob("*.npz")):
        with np.load(gt_path) as gt:
            fg = gt["mask"] & (gt["vertex"] >= 0)
            truth = gt["vertex"][fg]
        given, pred = _vertex(inputs, gt_path.name), _vertex(predictions, gt_path.name)
        if given.shape != fg.shape or pred.shape != fg.shape:
            raise SystemExit(
                f"{gt_path.name}: vertex maps of shape {given.shape} (input) and {pred.shape} (model), "
                f"expected the GT's {fg.shape}"
            )
        given, pred = given[fg], pred[fg]
        # geodesic_error is inf where a map says background, so background is a miss
        right = {
            name: geodesic_error(truth, v, geodesics) <= cm / 100.0 for name, v in (("input", given), ("model", pred))
        }
        total += len(truth)
        counts["input"] += right["input"].sum()
        counts["model"] += right["model"].sum()
        counts["keeps the input"] += (pred == given).sum()
        counts["fixed"] += (~right["input"] & right["model"]).sum()
        broken = right["input"] & ~right["model"]
        counts["broken to background"] += (broken & (pred < 0)).sum()
        counts["broken to another vertex"] += (broken & (pred >= 0)).sum()
    return {k: 100.0 * int(v) / max(total, 1) for k, v in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("."), help="checkout of a finished `make run`")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--cm", type=float, default=10.0)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="another prediction set")
    args = parser.parse_args()
    models = {name: args.run / pattern.format(split=args.split) for name, pattern in MODELS.items()}
    for spec in args.model:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise SystemExit(f"--model {spec!r}: expected NAME=DIR")
        models[name] = Path(directory)
    geodesics = Geodesics.load(args.run / "data" / "template")
    gt_dir = args.run / "data" / "render" / args.split / "gt"
    inputs = args.run / "data" / "cse" / args.split
    print(f"{args.split} split, within {args.cm:g} cm, % of GT foreground pixels; input: CSE ({inputs})\n")
    print("| model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS))
    for name, predictions in models.items():
        if not predictions.is_dir():
            print(f"| {name} | " + " | ".join("–" for _ in COLUMNS) + f" |  (no {predictions})")
            continue
        shares = against_input(gt_dir, inputs, predictions, geodesics, args.cm)
        print(f"| {name} | " + " | ".join(f"{shares[c]:.2f}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
