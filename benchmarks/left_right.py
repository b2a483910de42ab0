"""Benchmark: how much of a model's error is left/right confusion, and at what granularity a fix would have to act.

    .venv/bin/python benchmarks/left_right.py [--run .] [--split test] [--cm 10]

For each model's dense predictions on a rendered split of a finished `make run` (CSE: `data/cse/<split>`, BodyMap
pretrained: `data/pretrain/predictions/<split>`, registered: `data/evaluation/predictions/bodymap/<split>`), the
share of GT foreground pixels whose predicted vertex is within `--cm` of the true one geodesically (the
`cm_<c>` metric of `bodymap evaluate`), then the same with every prediction replaced by its mirror vertex
(`template.symmetry`), and three oracles that keep, of the prediction and its mirror, whichever is right more
often: per pixel, per person, per (person, body part). The oracles are upper bounds on what a symmetry-aware fix
could add when it decides the side once per pixel, once per person (which way the person faces) or once per limb.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bodymap.eval.accuracy import geodesic_error
from bodymap.template import BodyTemplate

MODELS = {
    "CSE": "data/cse/{split}",
    "BodyMap, pretrained": "data/pretrain/predictions/{split}",
    "BodyMap, registered": "data/evaluation/predictions/bodymap/{split}",
}
COLUMNS = ["as predicted", "mirrored", "oracle per pixel", "oracle per person", "oracle per person and part"]


def left_right(gt_dir: Path, predictions: Path, template: BodyTemplate, cm: float) -> dict[str, float]:
    """The five shares (%) of `COLUMNS` over every GT foreground pixel of `gt_dir` (a split's `gt/*.npz`), for the
    predictions of the same names in `predictions` (`vertex` [H, W], -1 for background)."""
    hits = dict.fromkeys(COLUMNS, 0)
    total = 0
    for gt_path in sorted(gt_dir.glob("*.npz")):
        gt = np.load(gt_path)
        pred = np.load(predictions / gt_path.name)["vertex"]
        fg = gt["mask"] & (gt["vertex"] >= 0)
        truth, vertex, person = gt["vertex"][fg], pred[fg], gt["person"][fg]
        mirrored = np.where(vertex >= 0, template.symmetry[np.maximum(vertex, 0)], -1)  # background stays background
        right = geodesic_error(truth, vertex, template.geodesics) <= cm / 100.0  # background: a miss either way
        mirror = geodesic_error(truth, mirrored, template.geodesics) <= cm / 100.0
        total += len(truth)
        hits["as predicted"] += right.sum()
        hits["mirrored"] += mirror.sum()
        hits["oracle per pixel"] += (right | mirror).sum()
        part = template.part[truth]
        for key, groups in (("oracle per person", person), ("oracle per person and part", person * 256 + part)):
            for g in np.unique(groups):
                sel = groups == g
                hits[key] += max(right[sel].sum(), mirror[sel].sum())
    return {k: 100.0 * v / max(total, 1) for k, v in hits.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("."), help="checkout of a finished `make run`")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--cm", type=float, default=10.0)
    args = parser.parse_args()
    template = BodyTemplate.load(args.run / "data" / "template")
    print(f"{args.split} split, within {args.cm:g} cm (%)\n")
    print("| model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS))
    for name, pattern in MODELS.items():
        predictions = args.run / pattern.format(split=args.split)
        if not predictions.is_dir():
            print(f"| {name} | " + " | ".join("–" for _ in COLUMNS) + f" |  (no {predictions})")
            continue
        shares = left_right(args.run / "data" / "render" / args.split / "gt", predictions, template, args.cm)
        print(f"| {name} | " + " | ".join(f"{shares[c]:.1f}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
