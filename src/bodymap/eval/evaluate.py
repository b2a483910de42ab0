"""`evaluate_set`: every metric one evaluation set supports, for one prediction set; `write_report` for many.

An evaluation set pairs a ground truth (`groundtruth.GroundTruth`) with a prediction directory. What is computed
depends on the ground truth:

| GT | DensePose AP/AR (3 modes, two settings) | cm accuracy | window accuracy | temporal |
|---|---|---|---|---|
| coco (DensePose-COCO JSON) | yes | on its sparse points | - (needs dense truth) | - |
| dense (split with gt/<id>.npz) | if annotations.json exists | on every GT foreground pixel | yes | - |
| video (gt/<seq>/<frame>.npz) | if annotations.json exists | on every GT foreground pixel | yes | yes |

DensePose AP comes in two settings. End to end (`gps_ap`, ...): the model's own detections (a dense prediction is
split into instances), so instance splitting and correspondence quality both count. Given the ground-truth boxes
(`gtbox_gps_ap`, ...; the "GT detections" setting of DensePose and Slim DensePose): each non-crowd GT's box is a
detection holding the prediction inside it, which isolates correspondence quality. GPS normalises each point's
geodesic error by κ of its part (detectron2's per-part values for IUV data, `densepose.CHART_KAPPA`), or by the
original paper's single κ = 0.255 with `kappa: global`.

Predictions are matched to COCO images by `image_id` and to dense GT files by their relative path (`<id>`,
`<seq>/<frame>`). A prediction for an image the GT does not have is an error; a GT image without a prediction
predicts nothing (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bodymap.config import EvaluateParams
from bodymap.densepose import DEFAULT_KAPPA
from bodymap.errors import input_error
from bodymap.eval import plots
from bodymap.eval.accuracy import PointAccumulator, geodesic_error
from bodymap.eval.densepose_ap import APResult, evaluate_ap
from bodymap.eval.groundtruth import CocoGroundTruth, GroundTruth
from bodymap.eval.predictions import INDEX, Instances, PredictionSet, crop_box
from bodymap.eval.temporal import temporal_consistency, temporal_metrics
from bodymap.io import read_image, write_json
from bodymap.log import progress
from bodymap.template import BodyTemplate

log = logging.getLogger(__name__)

Metrics = dict[str, float | None]


def _ascending(values: list[int] | list[float]) -> tuple:
    """A radius or interval list as the evaluator uses it: each value once, smallest first."""
    return tuple(sorted(set(values)))


@dataclass
class SetResult:
    """metrics: the flat metrics of the set; ap: the DensePose AP result (detections as predicted) and gt_box_ap
    (each GT box's prediction as its detection) when the GT has COCO annotations."""

    metrics: Metrics
    ap: APResult | None
    gt_box_ap: APResult | None = None


def check_predictions(ground_truth: GroundTruth, predictions: PredictionSet) -> None:
    """Every prediction must name an image of the ground truth (COCO image id and/or dense GT file)."""
    index = predictions.directory / INDEX
    dense_keys = set(ground_truth.dense.keys) if ground_truth.dense is not None else set()
    for i, entry in enumerate(predictions.entries):
        coco = ground_truth.coco
        if coco is not None and entry.image_id not in coco.index_of:
            raise input_error(
                index, f"images[{i}]", "image_id", f"unknown image id {entry.image_id}: not in {coco.path}"
            )
        dense = ground_truth.dense
        if dense is not None and entry.key not in dense_keys:
            raise input_error(
                index,
                f"images[{i}]",
                "file",
                f"{entry.key}.npz matches no ground-truth file {dense.root / 'gt' / entry.key}.npz",
            )


def _image(ground_truth: GroundTruth, **where: object) -> np.ndarray | None:
    path = ground_truth.image_file(**where)  # type: ignore[arg-type]
    return read_image(path) if path is not None else None


def gt_box_detections(coco: CocoGroundTruth, i: int, image_map: np.ndarray, score_map: np.ndarray) -> Instances:
    """The "given ground-truth boxes" detections of image i: one per non-crowd GT, its box as given and, on
    detectron2's box grid, the image-level prediction inside it (other people's pixels included, as a box head
    sees them). Score: the mean foreground score over the box."""
    boxes, scores, maps = [], [], []
    for g in range(coco.gt_start[i], coco.gt_start[i + 1]):
        if coco.iscrowd[g]:
            continue
        box = coco.boxes[g]
        grid = crop_box(image_map, box)
        boxes.append(box)
        scores.append(float(np.mean(crop_box(score_map, box, fill=0.0))))
        maps.append(grid)
    if not boxes:
        return Instances.empty()
    return Instances(np.asarray(boxes, np.float64), np.asarray(scores, np.float64), tuple(maps))


def _evaluate_coco(
    ground_truth: GroundTruth,
    predictions: PredictionSet,
    template: BodyTemplate,
    settings: EvaluateParams,
    points: PointAccumulator | None,
    vis_dir: Path | None,
) -> tuple[APResult, APResult, int]:
    """(AP of the predicted detections, AP given the GT boxes, number of detections)."""
    coco = ground_truth.coco
    assert coco is not None
    if settings.kappa == "global":
        coco = replace(coco, kappa=np.full_like(coco.kappa, DEFAULT_KAPPA))
    detections: list[Instances] = []
    given_boxes: list[Instances] = []
    missing = 0
    x_all, y_all = coco.point_pixels
    point_image = coco.point_image
    for i in progress(range(coco.num_images), "read predictions", logger=log):
        shape = (int(coco.heights[i]), int(coco.widths[i]))
        entry = predictions.by_id.get(int(coco.image_ids[i]))
        missing += entry is None
        view = predictions.read(
            entry, shape, max_detections=settings.max_detections, min_pixels=settings.min_instance_pixels
        )
        detections.append(view.ranked)
        given_boxes.append(gt_box_detections(coco, i, view.vertex, view.score))
        if points is None:
            continue
        sel = slice(*np.searchsorted(point_image, [i, i + 1]))
        x, y, v = x_all[sel], y_all[sel], coco.vertex[sel]
        points.add_points(x, y, v, view.vertex)
        if vis_dir is not None and i < settings.visualisations:
            correct = geodesic_error(v, view.vertex[y, x], template.geodesics) <= 0.10
            rgb = plots.sparse_sample(
                _image(ground_truth, image_index=i), shape, x, y, v, view.vertex, correct, template.colors
            )
            plots.save_sample(vis_dir / f"{int(coco.image_ids[i]):06d}.png", rgb)
    if missing:
        log.warning("%s: %d of %d images have no prediction", predictions.directory, missing, coco.num_images)
    ap = evaluate_ap(coco, detections, template.geodesics)
    return ap, evaluate_ap(coco, given_boxes, template.geodesics), sum(len(d) for d in detections)


def _dense_points(
    ground_truth: GroundTruth,
    predictions: PredictionSet,
    template: BodyTemplate,
    settings: EvaluateParams,
    points: PointAccumulator,
    vis_dir: Path | None,
) -> None:
    dense = ground_truth.dense
    assert dense is not None
    missing = 0
    for n, key in enumerate(progress(dense.keys, "dense points", logger=log)):
        frame = dense.load(key)
        entry = predictions.by_key.get(key)
        missing += entry is None
        pred = predictions.read(
            entry, frame.vertex.shape, max_detections=settings.max_detections, min_pixels=settings.min_instance_pixels
        ).vertex
        visible = dense.visible(key, template.geodesics, template.mean_edge_length)
        points.add_dense(frame.vertex, frame.person, pred, visible)
        if vis_dir is not None and n < settings.visualisations:
            y, x = np.nonzero(frame.vertex >= 0)
            error = np.full(frame.vertex.shape, np.inf)
            error[y, x] = geodesic_error(frame.vertex[y, x], pred[y, x], template.geodesics)
            rgb = plots.dense_sample(_image(ground_truth, key=key), frame.vertex, pred, error, template.colors)
            plots.save_sample(vis_dir / f"{key.replace('/', '_')}.png", rgb)
    if missing:
        log.warning("%s: %d of %d GT images have no prediction", predictions.directory, missing, len(dense.keys))


def _temporal(
    ground_truth: GroundTruth, predictions: PredictionSet, template: BodyTemplate, settings: EvaluateParams
) -> Metrics:
    dense = ground_truth.dense
    assert dense is not None

    def load(sequence: str, t: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        key = dense.sequences[sequence][t]
        frame = dense.load(key)
        pred = predictions.read(
            predictions.by_key.get(key),
            frame.vertex.shape,
            max_detections=settings.max_detections,
            min_pixels=settings.min_instance_pixels,
        ).vertex
        return frame.vertex, frame.person, pred

    counts = temporal_consistency(
        {name: len(keys) for name, keys in dense.sequences.items()},
        load,
        intervals=_ascending(settings.temporal_intervals),
        geodesics=template.geodesics,
        tau_m=settings.temporal_tau_cm / 100.0,
        window_px=settings.temporal_window_px,
        reference_height_px=settings.reference_height_px,
    )
    for k, (_, total) in counts.items():
        if total == 0:
            log.warning("temporal_k%d: no frame pair %d frames apart with a surface point visible in both", k, k)
    return temporal_metrics(counts)


def evaluate_set(
    *,
    ground_truth: GroundTruth,
    predictions: PredictionSet,
    template: BodyTemplate,
    settings: EvaluateParams,
    out_dir: Path | None = None,
    title: str = "",
) -> SetResult:
    """All metrics of one prediction set on one ground truth (see the module docstring for which).

    Args:
        settings: the `evaluate` params section (radii, intervals, kappa, detections, pictures; the radius and
            interval lists are taken sorted, each value once).
        out_dir: when given, PR curves (`pr_<mode>.csv`, `pr.png`) and `vis/*.png` panels are written there.
    Returns:
        SetResult; metrics keys: `<mode>_ap..._arl` (mode gps, gpsm, iou) for the predicted detections and
        `gtbox_<mode>_...` given the GT boxes, `window_<w>px[_<group>]`, `window_scaled_<w>px`, `cm_<c>[_<group>]`,
        `temporal_k<k>`, and the counts `images`, `gt_instances`, `detections`, `points`.
    """
    check_predictions(ground_truth, predictions)
    if template.geodesics.mode != "dense":
        log.warning("template geodesics are landmark-approximated: near distances (window, cm) are coarse")
    points = PointAccumulator(
        template.geodesics,
        template.chart,
        windows_px=_ascending(settings.windows_px),
        cm=_ascending(settings.geodesic_cm),
        min_spacing_m=template.mean_edge_length,
        reference_height_px=settings.reference_height_px,
    )
    vis_dir = out_dir / "vis" if out_dir is not None and settings.visualisations > 0 else None
    metrics: Metrics = {}
    ap = gt_box_ap = None
    coco = ground_truth.coco
    if coco is not None:
        sparse_points = points if ground_truth.dense is None else None
        ap, gt_box_ap, detections = _evaluate_coco(
            ground_truth, predictions, template, settings, sparse_points, vis_dir
        )
        metrics.update(ap.metrics())
        metrics.update({f"gtbox_{k}": v for k, v in gt_box_ap.metrics().items()})
        metrics["images"] = float(coco.num_images)
        metrics["gt_instances"] = float(np.sum(~coco.ignore))
        metrics["detections"] = float(detections)
        if out_dir is not None:
            plots.write_pr_curves(ap, out_dir, title or ground_truth.source.name)
    if ground_truth.dense is not None:
        _dense_points(ground_truth, predictions, template, settings, points, vis_dir)
        metrics.setdefault("images", float(len(ground_truth.dense.keys)))
    metrics.update(points.metrics())
    metrics["points"] = float(points.num_points)
    if ground_truth.kind == "video":
        metrics.update(_temporal(ground_truth, predictions, template, settings))
    return SetResult(metrics, ap, gt_box_ap)


def flatten(results: Mapping[str, Mapping[str, float | None]]) -> Metrics:
    """{set name: metrics} -> one flat mapping `<name>/<metric>` (names may themselves be `model/set`)."""
    return {f"{name}/{key}": value for name, metrics in results.items() for key, value in metrics.items()}


def write_report(results: Mapping[str, Mapping[str, float | None]], path: str | Path) -> Metrics:
    """Write the flat metrics of several evaluation sets as one JSON (DVC metrics); values rounded to 4 decimals,
    None (undefined: nothing to measure) kept as null."""
    flat = {k: (None if v is None else round(float(v), 4)) for k, v in flatten(results).items()}
    write_json(path, flat)
    return flat


__all__ = [
    "SetResult",
    "check_predictions",
    "evaluate_set",
    "flatten",
    "gt_box_detections",
    "write_report",
]
