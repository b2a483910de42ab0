"""Benchmark: the vectorised evaluator on >= 1,000 instances, and against plain loops of the same definitions.

    .venv/bin/python benchmarks/evaluate.py [--template data/template] [--images 360] [--points 100]

Builds a toy DensePose-COCO set (people ray-cast from the template, 2-4 per image, >= 1,000 annotated instances,
`--points` points each, and the dense truth of every image) with detector-style predictions (jittered fractional
boxes, duplicates, false positives, displaced vertices, lost foreground) and a toy video, then times:

- DensePose AP/AR in the three modes, end to end and given the GT boxes, on the whole set;
- geodesic cm accuracy on the sparse points and pixel-window accuracy (raw and scaled) on the dense truth of every
  image, the visible-surface tables included;
- temporal consistency on the toy video;

and checks the numbers against the loop implementations in `tests/eval_reference.py` (AP on the whole set; the
window and temporal loops, one pixel at a time, on a few images and frames).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bodymap.eval import read_coco
from bodymap.eval.accuracy import PointAccumulator, visible_surface, window_errors
from bodymap.eval.densepose_ap import evaluate_ap
from bodymap.eval.evaluate import gt_box_detections
from bodymap.eval.predictions import paste_instances
from bodymap.eval.temporal import temporal_consistency
from bodymap.eval.toydata import ToyPeople, annotate, coco_document, neighbour_table, noisy, random_detections
from bodymap.io import write_json
from bodymap.template import BodyTemplate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import eval_reference  # noqa: E402  (the loop implementations live with the tests)


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
    video = [people.scene((128, 160), [("front", 110, 5 + 4 * t, 5)]) for t in range(13)]
    frames = [(s.vertex, s.person, noisy(s.vertex, table, rng, drop=0.05)) for s in video]
    return coco, scenes, dets, frames, read_seconds


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
    parser.add_argument("--loop-images", type=int, default=3, help="images the per-pixel window loop checks")
    args = parser.parse_args()

    template = BodyTemplate.load(args.template)
    geodesics = template.geodesics
    with tempfile.TemporaryDirectory() as tmp:
        coco, scenes, dets, frames, read_seconds = build(template, args.images, args.points, args.seed, Path(tmp))
    n_gt, n_det = int(np.sum(~coco.ignore)), sum(len(d) for d in dets)
    shapes = [(int(h), int(w)) for h, w in zip(coco.heights, coco.widths, strict=True)]
    maps = [paste_instances(d, s) for d, s in zip(dets, shapes, strict=True)]
    scores = [paste_instances(d, s, scores=True) for d, s in zip(dets, shapes, strict=True)]
    print(f"template {template.name}: {template.num_vertices} vertices, geodesics {geodesics.mode}")
    print(f"inputs: {coco.num_images} images, {n_gt} GT instances, {n_det} detections, {coco.num_points} GT points, "
          f"{sum(int((s.vertex >= 0).sum()) for s in scenes)} dense GT pixels, {len(frames)} video frames")  # fmt: skip
    print(f"reading the DensePose-COCO JSON: {read_seconds:.2f} s")
    geodesics.rows(np.arange(0, template.num_vertices, 97))  # touch the memory map once

    rows = []  # (name, vectorised s, loop s or None, |diff| or None, values)
    ap, t_fast = timed(lambda: evaluate_ap(coco, dets, geodesics).metrics(), repeat=2)
    ap_ref, t_ref = timed(lambda: eval_reference.densepose_ap(coco, dets, geodesics))
    diff = max(abs((ap[k] or 0) - (ap_ref[k] or 0)) for k in ap_ref)
    rows.append(("DensePose AP/AR, 3 modes", t_fast, t_ref, diff,
                 f"gps {ap['gps_ap']:.1f} gpsm {ap['gpsm_ap']:.1f} iou {ap['iou_ap']:.1f}"))  # fmt: skip
    given = [gt_box_detections(coco, i, maps[i], scores[i]) for i in range(coco.num_images)]
    gt_box, t_fast = timed(lambda: evaluate_ap(coco, given, geodesics).metrics())
    gt_box_ref, t_ref = timed(lambda: eval_reference.densepose_ap(coco, given, geodesics))
    diff = max(abs((gt_box[k] or 0) - (gt_box_ref[k] or 0)) for k in gt_box_ref)
    rows.append(("DensePose AP/AR given GT boxes", t_fast, t_ref, diff, f"gps {gt_box['gps_ap']:.1f}"))

    x, y = coco.point_pixels
    bounds = np.searchsorted(coco.point_image, np.arange(coco.num_images + 1))

    def point_metrics():
        acc = PointAccumulator(
            geodesics, template.chart, windows_px=(5, 10, 20), cm=(5.0, 10.0, 20.0),
            min_spacing_m=template.mean_edge_length,
        )  # fmt: skip
        for i in range(coco.num_images):
            a, b = bounds[i], bounds[i + 1]
            acc.add_points(x[a:b], y[a:b], coco.vertex[a:b], maps[i])
        for scene, pred in zip(scenes, maps, strict=True):
            acc.add_dense(scene.vertex, scene.person, pred)
        return acc.metrics()

    points, t_fast = timed(point_metrics)
    rows.append(("cm (points) + window (dense truth)", t_fast, None, None,
                 f"cm_10 {points['cm_10']:.1f} window_10px {points['window_10px']:.1f} "
                 f"scaled {points['window_scaled_10px']:.1f}"))  # fmt: skip

    def window_fast():
        out = []
        for scene, pred in zip(scenes[: args.loop_images], maps, strict=False):
            visible = visible_surface(scene.vertex, scene.person, geodesics, template.mean_edge_length)
            out.append(window_errors(visible, pred)[0])
        return np.concatenate(out)

    fast, t_fast = timed(window_fast)
    loop, t_ref = timed(lambda: np.concatenate([
        eval_reference.window_errors(s.vertex, s.person, p, geodesics, template.mean_edge_length)
        for s, p in zip(scenes[: args.loop_images], maps, strict=False)
    ]))  # fmt: skip
    diff = float(np.max(np.abs(np.where(np.isinf(fast), -1, fast) - np.where(np.isinf(loop), -1, loop))))
    rows.append((f"window errors, {args.loop_images} images", t_fast, t_ref, diff, f"{len(fast)} pixels"))

    def temporal(frames_, intervals):
        return temporal_consistency({"s": len(frames_)}, lambda _, t: frames_[t], intervals=intervals,
                                    geodesics=geodesics, tau_m=0.05, window_px=32.0)  # fmt: skip

    counts, t_fast = timed(lambda: temporal(frames, (1, 3, 12)))
    rows.append((f"temporal consistency, {len(frames)} frames", t_fast, None, None,
                 " ".join(f"k{k} {100 * m / n:.1f}" for k, (m, n) in counts.items())))  # fmt: skip
    pair = frames[:2]
    first, t_fast = timed(lambda: temporal(pair, (1,))[1])
    want, t_ref = timed(lambda: eval_reference.temporal_pair(pair[0], pair[1], geodesics, 0.05, 32.0, 1024.0))
    rows.append(("temporal, one frame pair", t_fast, t_ref, 0.0 if first == want else np.inf, f"{want}"))

    print(f"\n{'':38s} {'vectorised':>11s} {'loops':>9s} {'speed-up':>9s} {'max |diff|':>11s}  values")
    for name, fast_s, ref_s, diff, values in rows:
        ref_text = f"{ref_s:8.2f}s {ref_s / fast_s:8.1f}x" if ref_s is not None else f"{'-':>9s} {'-':>9s}"
        diff_text = f"{diff:11.2g}" if diff is not None else f"{'-':>11s}"
        print(f"{name:38s} {fast_s:10.2f}s {ref_text} {diff_text}  {values}")
    ok = all(diff is None or diff < 1e-6 for *_, diff, _ in rows)
    print("same numbers" if ok else "NUMBERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
