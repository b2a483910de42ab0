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

A split is a few dozen images of a few identities, so a gap between two models on it is also a draw of those
images. Beside the shares, the gap (model - input, points) gets a 95 % interval from a paired bootstrap over the
split's images (`--resamples` draws of as many images with replacement, both models scored on the same draw, seeded:
the same figures on every run). A gap whose interval spans 0 is not one the split can tell from image sampling;
training seeds are a second, separate spread (`scripts/seeds.py`, `benchmarks/learning_curve.py --seeds`).
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


def image_counts(gt_dir: Path, inputs: Path, predictions: Path, geodesics: Geodesics, cm: float) -> dict:
    """Per image of `gt_dir` (a split's `gt/*.npz`, in name order), the pixel counts behind each of `COLUMNS` and
    the GT foreground pixel count ("pixels"), for the input and model predictions of the same names (`vertex`
    [H, W], -1 for background). Returns {column: [n_images] int64}."""
    per_image = []
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
        broken = right["input"] & ~right["model"]
        per_image.append(
            {
                "pixels": len(truth),
                "input": right["input"].sum(),
                "model": right["model"].sum(),
                "keeps the input": (pred == given).sum(),
                "fixed": (~right["input"] & right["model"]).sum(),
                "broken to background": (broken & (pred < 0)).sum(),
                "broken to another vertex": (broken & (pred >= 0)).sum(),
            }
        )
    return {k: np.array([int(c[k]) for c in per_image], np.int64) for k in ["pixels", *COLUMNS]}


def shares(counts: dict) -> dict[str, float]:
    """The shares (%) of `COLUMNS` over all GT foreground pixels of `image_counts`' images."""
    total = max(int(counts["pixels"].sum()), 1)
    return {k: 100.0 * int(counts[k].sum()) / total for k in COLUMNS}


def against_input(gt_dir: Path, inputs: Path, predictions: Path, geodesics: Geodesics, cm: float) -> dict[str, float]:
    """The shares (%) of `COLUMNS` over every GT foreground pixel of `gt_dir`; see `image_counts`."""
    return shares(image_counts(gt_dir, inputs, predictions, geodesics, cm))


def gap_interval(counts: dict, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval (points) of model - input accuracy under a paired bootstrap over the images of `counts`."""
    n = len(counts["pixels"])
    if n == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    pixels = np.maximum(counts["pixels"][draws].sum(axis=1), 1)
    gaps = 100.0 * (counts["model"][draws].sum(axis=1) - counts["input"][draws].sum(axis=1)) / pixels
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("."), help="checkout of a finished `make run`")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--cm", type=float, default=10.0)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="another prediction set")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap draws for the gap's interval")
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
    header = [*COLUMNS, "model - input", "95 % over images"]
    print("| model | " + " | ".join(header) + " |\n|---|" + "---|" * len(header))
    for name, predictions in models.items():
        if not predictions.is_dir():
            print(f"| {name} | " + " | ".join("–" for _ in header) + f" |  (no {predictions})")
            continue
        counts = image_counts(gt_dir, inputs, predictions, geodesics, args.cm)
        share = shares(counts)
        low, high = gap_interval(counts, args.resamples)
        cells = [f"{share[c]:.2f}" for c in COLUMNS] + [f"{share['model'] - share['input']:+.2f}"]
        print(f"| {name} | " + " | ".join(cells) + f" | {low:+.2f} .. {high:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
