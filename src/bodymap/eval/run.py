"""Scoring named evaluation sets into one flat report: the library `bodymap evaluate` and the stages that score
their own model (cse_init, pretrain, finetune) call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bodymap.config import EvaluateParams
from bodymap.data.sets import ImageSet
from bodymap.errors import BodymapError
from bodymap.eval.evaluate import evaluate_set, write_report
from bodymap.eval.groundtruth import GroundTruth, load_ground_truth
from bodymap.eval.predictions import PredictionSet
from bodymap.io import atomic_dir, write_run_info
from bodymap.template import BodyTemplate

log = logging.getLogger(__name__)

HEADLINE = (
    "gps_ap",
    "gpsm_ap",
    "gtbox_gpsm_ap",
    "iou_ap",
    "window_10px",
    "window_scaled_10px",
    "cm_5",
    "cm_10",
    "cm_20",
)


@dataclass(frozen=True)
class EvalSpec:
    """One `--eval` argument: a set name, GT kind and path, prediction directory, optional image directory."""

    name: str
    kind: str
    gt: Path
    predictions: Path
    images: Path | None = None


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


def _headline(metrics: dict[str, float | None]) -> str:
    shown = [f"{k}={metrics[k]:.1f}" for k in HEADLINE if metrics.get(k) is not None]
    shown += [f"{k}={v:.1f}" for k, v in metrics.items() if k.startswith("temporal_") and v is not None]
    return " ".join(shown) or "nothing measurable"


def run_evaluation(
    template: BodyTemplate, specs: list[EvalSpec], p: EvaluateParams, out: Path, **run_info: object
) -> dict[str, float | None]:
    """Evaluate every set into `out` (atomically): metrics.json, run.yaml, per-set PR curves and pictures.

    Returns the flat metrics (`<NAME>/<metric>`). Used by `bodymap evaluate` and by the stages that score their
    own model (cse_init, pretrain, finetune).
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BodymapError(f"--eval names must be unique, got {', '.join(names)}")
    ground_truths: dict[tuple[str, Path, Path | None], GroundTruth] = {}
    results = {}
    with atomic_dir(out) as tmp:
        for spec in specs:
            key = (spec.kind, spec.gt.resolve(), spec.images)
            if key not in ground_truths:
                ground_truths[key] = load_ground_truth(spec.kind, spec.gt, template=template, images_dir=spec.images)
            predictions = PredictionSet.open(
                spec.predictions, num_vertices=template.num_vertices, template_name=template.name
            )
            result = evaluate_set(
                ground_truth=ground_truths[key],
                predictions=predictions,
                template=template,
                settings=p,
                out_dir=tmp / spec.name,
                title=spec.name,
            )
            results[spec.name] = result.metrics
            log.info("%s: %s", spec.name, _headline(result.metrics))
        flat = write_report(results, tmp / "metrics.json")
        record = {
            "template": str(template.directory) if template.directory is not None else template.name,
            "eval_sets": [{k: str(v) for k, v in vars(s).items() if v is not None} for s in specs],
            **run_info,  # callers may add to (or override) the record
        }
        write_run_info(tmp, "evaluate", p.model_dump(mode="json"), **record)
    log.info("evaluation written to %s", out)
    return flat
