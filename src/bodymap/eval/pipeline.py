"""Evaluation as the pipeline composes it: predict with a checkpoint (`bodymap.predict`), then score
(`bodymap.eval.run`). The final `evaluate` stage (BodyMap and the CSE baseline side by side on the synthetic test,
held-out DensePose-COCO and video sets, with a comparison table and window-accuracy curves) and the training stages'
own scoring (`evaluate_checkpoint`). Stage layer (it imports `bodymap.predict`), with typed arguments throughout."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bodymap.config import CocoLocations, EvaluateParams
from bodymap.data.sets import ImageSet, pipeline_sets
from bodymap.eval.floors import FLOORS, write_floor_predictions
from bodymap.eval.run import EvalSpec, run_evaluation, specs_for
from bodymap.io import atomic_path
from bodymap.predict import load_bodymap, predict_images
from bodymap.shards import merge_shards, run_shards, shard_batches, write_shard_record
from bodymap.template import BodyTemplate
from bodymap.train.distributed import select_device

log = logging.getLogger(__name__)

# The pipeline sets the report scores, in report order: defaults and the registry gate are chosen on the val sets,
# the test sets are only reported.
REPORT_SETS = ("val", "test", "coco_val", "coco_test", "video")
MODELS = ("bodymap", "cse", *FLOORS)
TABLE_METRICS = (
    "gps_ap",
    "gpsm_ap",
    "gtbox_gpsm_ap",
    "iou_ap",
    "window_5px",
    "window_10px",
    "window_20px",
    "window_scaled_10px",
    "cm_5",
    "cm_10",
    "cm_20",
)
TEMPORAL_METRICS = ("temporal_k1", "temporal_k12", "temporal_k120")
MODEL_NOTES = {
    "bodymap": "BodyMap (fine-tuned)",
    "cse": "CSE (its input)",
    "constant": "floor: one vertex on BodyMap's silhouette",
    "random": "floor: random vertices on BodyMap's silhouette",
}


def comparison_table(metrics: dict[str, Any], models: list[str], sets: list[str], columns=TABLE_METRICS) -> str:
    """A Markdown table: one row per (set, model) with any figure, the metrics as columns ('–': not measured)."""
    lines = ["| set | model | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name in sets:
        for model in models:
            cells = []
            for key in columns:
                value = metrics.get(f"{model}/{name}/{key}")
                cells.append("–" if value is None else f"{value:.1f}")
            if any(c != "–" for c in cells):
                lines.append(f"| {name} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(metrics: dict[str, Any], models: list[str], sets: list[str]) -> str:
    """The evaluation report: what each row is, the headline table and temporal consistency."""
    notes = "\n".join(f"- `{m}`: {MODEL_NOTES.get(m, m)}" for m in models)
    return (
        "# BodyMap vs CSE, beside the trivial floors\n\n"
        "Choose on the `val` sets, report the `test` sets. `*_dense`: the COCO-format images scored on the dense "
        "truth kept apart from training. AP: DensePose AP (detectron2), end to end (`gps_ap`, `gpsm_ap`, `iou_ap`) "
        "and given the GT boxes (`gtbox_gpsm_ap`). Windows: share of GT pixels whose predicted vertex is truly "
        "within w px of the pixel (`window_scaled`: w on a 1024-px-tall person). cm: within c cm geodesically.\n\n"
        f"{notes}\n\n"
        + comparison_table(metrics, models, sets)
        + "\n## Temporal consistency (video, % positive matches at 1 / 12 / 120 frames)\n\n"
        + comparison_table(metrics, models, [s for s in sets if s.startswith("video")], TEMPORAL_METRICS)
    )


def window_curve_csv(metrics: dict[str, Any], models: list[str], sets: list[str], windows: list[int]) -> str:
    """Window accuracy against the window radius, one column per model and set (DVC plots)."""
    columns = [f"{m}/{s}" for s in sets for m in models]
    lines = ["window_px," + ",".join(columns)]
    for w in windows:
        values = [metrics.get(f"{c}/window_{w}px") for c in columns]
        lines.append(f"{w}," + ",".join("" if v is None else f"{v:.4f}" for v in values))
    return "\n".join(lines) + "\n"


def evaluate_pipeline(
    template_dir: Path,
    render: Path,
    cse: Path,
    checkpoint: Path,
    out: Path,
    evaluate: EvaluateParams,
    coco: CocoLocations,
    image_size: int,
) -> dict[str, Any]:
    """Predict every report set with the fine-tuned model, score it, the CSE baseline and the floors drawn on its
    silhouettes, and write the report.

    Writes `out/predictions/<model>/<set>/` (BodyMap's dense predictions and the floors) and `out/report/`
    (metrics.json, report.md, window_accuracy.csv, per-set PR curves and pictures). Returns the flat metrics.
    The predictions are shared by `evaluate.workers` processes (`bodymap.shards`: the same files as one process).
    `coco`: where the DensePose-COCO sets lie; `image_size`: the training resolution photos are letterboxed to.
    """
    workers = evaluate.workers
    sets = pipeline_sets(render, coco)
    predictions = out / "predictions" / "bodymap"
    if workers <= 1:
        predict_report_sets(template_dir, sets, cse, checkpoint, predictions, image_size)
    else:
        predictions.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".shards.", dir=predictions))
        try:
            shard_dirs = [scratch / f"shard-{k}" for k in range(workers)]
            common = (template_dir, sets, cse, checkpoint)
            jobs = [(*common, d, image_size, "auto", k, workers) for k, d in enumerate(shard_dirs)]
            run_shards(predict_report_sets, jobs, workers)
            merge_shards(shard_dirs, predictions, "predictions")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return score_pipeline(template_dir, render, cse, checkpoint, out, evaluate, coco)


def predict_report_sets(
    template_dir: Path,
    sets: dict[str, ImageSet],
    cse: Path,
    checkpoint: Path,
    predictions: Path,
    size: int,
    device: str = "auto",
    shard: int = 0,
    num_shards: int = 1,
    batch_size: int = 8,
) -> dict[str, int]:
    """BodyMap's dense predictions of the report sets that exist, into `predictions/<set>/`; with `num_shards` > 1
    only shard `shard` of each set's batches, with a `shard.json` (`bodymap.shards`). Photos are letterboxed to
    `size`, the training resolution (`bodymap.data.letterbox`). Returns set -> images."""
    template = BodyTemplate.load(template_dir)
    dev = select_device(device)
    model = load_bodymap(checkpoint, dev)
    counts = {}
    for set_name in REPORT_SETS:
        image_set = sets[set_name]
        if not image_set.exists():
            log.warning("evaluate: no %s set at %s, skipped", set_name, image_set.root)
            continue
        images = image_set.images()
        mine = shard_batches(images, shard, num_shards, batch_size)
        predict_images(model, template, mine, cse / set_name, predictions / set_name, dev, batch_size, size)
        counts[set_name] = len(images)
    if num_shards > 1:
        write_shard_record(
            predictions, kind="predictions", shard=shard, num_shards=num_shards, batch_size=batch_size, sets=counts
        )
    return counts


def score_pipeline(
    template_dir: Path,
    render: Path,
    cse: Path,
    checkpoint: Path,
    out: Path,
    evaluate: EvaluateParams,
    coco: CocoLocations,
) -> dict[str, Any]:
    """Score BodyMap's predictions in `out/predictions/bodymap/<set>/` (`predict_report_sets`, or shards merged),
    the CSE baseline and the floors drawn on BodyMap's silhouettes; write `out/report/`. Returns the flat metrics."""
    template = BodyTemplate.load(template_dir)
    sets = pipeline_sets(render, coco)
    predictions = out / "predictions"
    specs: list[EvalSpec] = []
    for set_name in REPORT_SETS:
        image_set = sets[set_name]
        if not image_set.exists():
            continue
        bodymap = predictions / "bodymap" / set_name
        specs += specs_for("bodymap", image_set, bodymap, set_name)
        specs += specs_for("cse", image_set, cse / set_name, set_name)
        for floor in FLOORS:
            write_floor_predictions(bodymap, predictions / floor / set_name, floor, template)
            specs += specs_for(floor, image_set, predictions / floor / set_name, set_name)
    report = out / "report"
    metrics = run_evaluation(template, specs, evaluate, report, model=str(checkpoint))
    order = [name for s in REPORT_SETS for name in (s, f"{s}_dense")]
    names = sorted({s.name.split("/", 1)[1] for s in specs}, key=order.index)
    with atomic_path(report / "report.md") as tmp:
        tmp.write_text(report_markdown(metrics, list(MODELS), names))
    with atomic_path(report / "window_accuracy.csv") as tmp:
        tmp.write_text(window_curve_csv(metrics, list(MODELS), names, sorted(evaluate.windows_px)))
    return metrics


def evaluate_checkpoint(
    template_dir: Path,
    checkpoint: Path,
    image_sets: list[ImageSet],
    cse: Path,
    out: Path,
    evaluate: EvaluateParams,
    device: str = "auto",
    size: int | None = None,
    name: str = "bodymap",
) -> dict[str, Any]:
    """Predict pipeline sets with a checkpoint and score them (`specs_for`, metric keys `<name>/<set>/...`); flat
    metrics. `cse`: the cse_init outputs (one folder per set). `size`: the training resolution photos are
    letterboxed to (None: each image's own, for renders already at it)."""
    template = BodyTemplate.load(template_dir)
    dev = select_device(device)
    model = load_bodymap(checkpoint, dev)
    specs = []
    for image_set in image_sets:
        predictions = out / "predictions" / image_set.name
        predict_images(model, template, image_set.images(), cse / image_set.name, predictions, dev, size=size)
        specs += specs_for(name, image_set, predictions, image_set.name)
    return run_evaluation(template, specs, evaluate, out / "evaluation")
