"""Evaluation as the pipeline runs it: which ground truth each named set is scored against, and the final
`evaluate` stage (BodyMap and the CSE baseline side by side on the synthetic test, held-out DensePose-COCO and video
sets), with a comparison table and window-accuracy curves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bodymap.config import Params
from bodymap.data.sets import ImageSet, pipeline_sets
from bodymap.eval.stage import EvalSpec, run_evaluation
from bodymap.io import atomic_path
from bodymap.template import BodyTemplate

log = logging.getLogger(__name__)

# Set name in reports: the pipeline set it scores and how.
REPORT_SETS = {"test": "test", "coco": "coco_val", "video": "video"}
TABLE_METRICS = ("gps_ap", "gpsm_ap", "iou_ap", "window_5px", "window_10px", "window_20px", "cm_5", "cm_10", "cm_20")


def specs_for(model: str, image_set: ImageSet, predictions: Path, report_name: str) -> list[EvalSpec]:
    """Evaluation sets for one model's predictions on one pipeline set.

    Rendered sets are scored on their dense GT (and their COCO JSON); DensePose-COCO sets on their sparse points,
    plus on the dense truth the coco-like split keeps apart (`<report_name>_dense`).
    """
    if image_set.gt_kind in ("dense", "video"):
        return [EvalSpec(f"{model}/{report_name}", image_set.gt_kind, image_set.root, predictions)]
    specs = [EvalSpec(f"{model}/{report_name}", "coco", image_set.annotations, predictions, image_set.root)]
    if image_set.dense_truth is not None and image_set.dense_truth.is_dir():
        specs.append(
            EvalSpec(f"{model}/{report_name}_dense", "dense", image_set.dense_truth, predictions, image_set.image_dir)
        )
    return specs


def comparison_table(metrics: dict[str, Any], models: list[str], sets: list[str]) -> str:
    """A Markdown table: one row per (set, model), the headline metrics as columns."""
    lines = ["| set | model | " + " | ".join(TABLE_METRICS) + " |", "|---|---|" + "---|" * len(TABLE_METRICS)]
    for name in sets:
        for model in models:
            cells = []
            for key in TABLE_METRICS:
                value = metrics.get(f"{model}/{name}/{key}")
                cells.append("–" if value is None else f"{value:.1f}")
            if any(c != "–" for c in cells):
                lines.append(f"| {name} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def window_curve_csv(metrics: dict[str, Any], models: list[str], sets: list[str], windows: list[int]) -> str:
    """Window accuracy against the window radius, one column per model and set (DVC plots)."""
    columns = [f"{m}/{s}" for s in sets for m in models]
    lines = ["window_px," + ",".join(columns)]
    for w in windows:
        values = [metrics.get(f"{c}/window_{w}px") for c in columns]
        lines.append(f"{w}," + ",".join("" if v is None else f"{v:.4f}" for v in values))
    return "\n".join(lines) + "\n"


def evaluate_pipeline(
    template_dir: Path, render: Path, cse: Path, checkpoint: Path, out: Path, params: Params
) -> dict[str, Any]:
    """Predict every report set with the fine-tuned model, score it and the CSE baseline, write the report.

    Writes `out/predictions/<set>/` (BodyMap's dense predictions) and `out/report/` (metrics.json, report.md,
    window_accuracy.csv, per-set PR curves and pictures). Returns the flat metrics.
    """
    from bodymap.predict import load_bodymap, predict_images
    from bodymap.train.distributed import select_device

    template = BodyTemplate.load(template_dir)
    sets = pipeline_sets(render, params.pseudo_gt)
    device = select_device("auto")
    model = load_bodymap(checkpoint, device)
    predictions = out / "predictions"
    specs: list[EvalSpec] = []
    for report_name, set_name in REPORT_SETS.items():
        image_set = sets[set_name]
        if not image_set.exists():
            log.warning("evaluate: no %s set at %s, skipped", set_name, image_set.root)
            continue
        predict_images(model, template, image_set.images(), cse / set_name, predictions / set_name, device)
        specs += specs_for("bodymap", image_set, predictions / set_name, report_name)
        specs += specs_for("cse", image_set, cse / set_name, report_name)
    report = out / "report"
    metrics = run_evaluation(template, specs, params.evaluate, report, model=str(checkpoint))
    names = sorted({s.name.split("/", 1)[1] for s in specs}, key=[*REPORT_SETS, "coco_dense"].index)
    with atomic_path(report / "report.md") as tmp:
        tmp.write_text("# BodyMap vs CSE\n\n" + comparison_table(metrics, ["bodymap", "cse"], names))
    with atomic_path(report / "window_accuracy.csv") as tmp:
        tmp.write_text(window_curve_csv(metrics, ["bodymap", "cse"], names, sorted(params.evaluate.windows_px)))
    return metrics
