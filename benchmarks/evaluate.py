"""Benchmark: the vectorised evaluator against the plain loop implementation of the same definitions.

    .venv/bin/python benchmarks/evaluate.py [--template data/template] [--images 360] [--points 100]

Builds a toy DensePose-COCO set (people ray-cast from the template, 2-4 per image, >= 1,000 annotated instances,
`--points` points each) and detector-style predictions (jittered fractional boxes, duplicates, false positives,
displaced vertices, lost foreground), then times on the same loaded inputs:

- DensePose AP/AR in the three modes: `bodymap.eval.densepose_ap.evaluate_ap` vs `bodymap.eval.reference.densepose_ap`
- geodesic cm + pixel-window accuracy on the sparse points: `PointAccumulator` vs `reference.point_metrics`
- temporal consistency on a short toy video: `temporal_consistency` vs `reference.temporal`

and checks the numbers agree. Reading the GT and predictions is shared and timed separately.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bodymap.eval import read_coco, reference
from bodymap.eval.accuracy import PointAccumulator
from bodymap.eval.densepose_ap import evaluate_ap
from bodymap.eval.predictions import paste_instances
from bodymap.eval.temporal import temporal_consistency
from bodymap.eval.toydata import ToyPeople, annotate, coco_document, neighbour_table, noisy, random_detections
from bodymap.io import write_json
from bodymap.template import BodyTemplate

ROOT = Path(__file__).resolve().parents[1]


def build(template: BodyTemplate, n_images: int, points: int, seed: int, workdir: Path):
    rng = np.random.default_rng(seed)
    people = ToyPeople(template, resolution=256)
    table = neighbour_table(template, k=30, seed=seed)
    scenes, images, anns = [], [], []
    for image_id in range(1, n_images + 1):
        crowd = [
            (str(rng.choice(["front", "back"])), int(rng.integers(40, 230)), int(rng.integers(-30, 230)),
             int(rng.integers(-20, 60)))
            for _ in range(int(rng.integers(2, 5)))
        ]  # fmt: skip
        scene = people.scene((240, 320), crowd)
        scenes.append(scene)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 240, "width": 320})
        anns += annotate(scene, template, image_id=image_id, first_id=len(anns) + 1, points=points, rng=rng,
                         min_pixels=60)  # fmt: skip
    path = workdir / "annotations.json"
    write_json(path, coco_document(images, anns), indent=None)
    start = time.perf_counter()
    coco = read_coco(path, template)
    read_seconds = time.perf_counter() - start
    preds = [noisy(s.vertex, table, rng, drop=0.05) for s in scenes]
    dets = [random_detections(s, p, rng, false_positives=1).ranked(20) for s, p in zip(scenes, preds, strict=True)]
    video = [people.scene((160, 200), [("front", 150, 5 + 4 * t, 5)]) for t in range(8)]
    frames = [(s.vertex, s.person, noisy(s.vertex, table, rng, drop=0.05)) for s in video]
    return coco, dets, frames, read_seconds


def timed(fn, repeat: int = 1):
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, default=ROOT / "data/template")
    parser.add_argument("--images", type=int, default=360)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    template = BodyTemplate.load(args.template)
    geodesics = template.geodesics
    with tempfile.TemporaryDirectory() as tmp:
        coco, dets, frames, read_seconds = build(template, args.images, args.points, args.seed, Path(tmp))
    n_gt, n_det = int(np.sum(~coco.ignore)), sum(len(d) for d in dets)
    print(f"template {template.name}: {template.num_vertices} vertices, geodesics {geodesics.mode}")
    print(f"inputs: {coco.num_images} images, {n_gt} GT instances, {n_det} detections, {coco.num_points} GT points")
    print(f"reading the DensePose-COCO JSON (shared by both): {read_seconds:.2f} s")
    geodesics.rows(np.arange(0, template.num_vertices, 97))  # touch the memory map once for both sides

    rows = []
    ap, t_fast = timed(lambda: evaluate_ap(coco, dets, geodesics).metrics(), repeat=2)
    ap_ref, t_ref = timed(lambda: reference.densepose_ap(coco, dets, geodesics))
    diff = max(abs((ap[k] or 0) - (ap_ref[k] or 0)) for k in ap_ref)
    rows.append(("DensePose AP/AR, 3 modes", t_fast, t_ref, diff, f"gps_ap {ap['gps_ap']:.2f}, gpsm_ap "
                 f"{ap['gpsm_ap']:.2f}, iou_ap {ap['iou_ap']:.2f}"))  # fmt: skip

    x, y = coco.point_pixels
    shapes = [(int(h), int(w)) for h, w in zip(coco.heights, coco.widths, strict=True)]
    maps = [paste_instances(d, s) for d, s in zip(dets, shapes, strict=True)]
    bounds = np.searchsorted(coco.point_image, np.arange(coco.num_images + 1))
    images = [
        (x[a:b], y[a:b], coco.vertex[a:b], coco.chart[a:b], maps[i])
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    epsilon, windows, cms = template.mean_edge_length, (5, 10, 20), (5.0, 10.0, 20.0)

    def fast_points():
        acc = PointAccumulator(geodesics, epsilon_m=epsilon, windows_px=windows, cm=cms)
        for image in images:
            acc.add(*image)
        return acc.metrics(), np.concatenate(acc.window)

    (points, window), t_fast = timed(fast_points, repeat=2)
    (errors, window_ref, _), t_ref = timed(
        lambda: reference.point_metrics(images, geodesics, epsilon_m=epsilon, windows_px=windows, cm=cms)
    )
    errors = np.array(errors)
    same = np.array_equal(window, window_ref)
    diff = max(abs(points[f"cm_{c:g}"] - 100 * np.mean(errors <= c / 100)) for c in cms) + (0 if same else np.inf)
    rows.append(("cm + px-window accuracy", t_fast, t_ref, diff, f"window_10px {points['window_10px']:.2f}, "
                 f"cm_10 {points['cm_10']:.2f}"))  # fmt: skip

    def fast_temporal():
        return temporal_consistency({"s": len(frames)}, lambda _, t: frames[t], intervals=(1, 3), geodesics=geodesics,
                                    tau_m=0.05)  # fmt: skip

    counts, t_fast = timed(fast_temporal, repeat=2)
    want, t_ref = timed(lambda: {k: reference.temporal(frames, k, geodesics, 0.05) for k in (1, 3)})
    diff = 0.0 if counts == want else np.inf
    rows.append(("temporal consistency (8 frames)", t_fast, t_ref, diff,
                 f"k1 {100 * counts[1][0] / counts[1][1]:.2f}"))  # fmt: skip

    print(f"\n{'':34s} {'vectorised':>11s} {'loops':>9s} {'speed-up':>9s} {'max |diff|':>11s}  values")
    total_fast = total_ref = 0.0
    for name, fast, ref, diff, values in rows:
        total_fast, total_ref = total_fast + fast, total_ref + ref
        print(f"{name:34s} {fast:10.2f}s {ref:8.2f}s {ref / fast:8.1f}x {diff:11.2g}  {values}")
    print(f"{'all':34s} {total_fast:10.2f}s {total_ref:8.2f}s {total_ref / total_fast:8.1f}x")
    ok = all(diff < 1e-6 for *_, diff, _ in rows)
    print("same numbers" if ok else "NUMBERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
