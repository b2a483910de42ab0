"""`bodymap finetune`: adapt the pretrained BodyMap to DensePose-COCO (BodyMap supp. Sec. 7, Tables 7-8).

mode `none` keeps the pretrained weights; `sparse` trains on the annotated points only (plus silhouettes); `dense`
trains on the pseudo-GT maps weighted by their confidence. `use_flow_labels` adds video frames labelled by
Slim DensePose's flow propagation, and `equivariance.weight` > 0 adds the equivariance loss on synthetic warps
(`tps`: a random similarity warp of the batch) or on video frame pairs (`flow`). Scored on the held-out set.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from bodymap.config import FinetuneParams, Params
from bodymap.data.augment import AugmentConfig
from bodymap.data.rendered import DenseDataset, Source
from bodymap.errors import BodymapError
from bodymap.io import write_json, write_run_info
from bodymap.losses.equivariance import equivariance_loss, random_affine_flow
from bodymap.losses.total import LossWeights, TemplateTensors, total_loss
from bodymap.models.registry import create_model
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker
from bodymap.train.checkpoint import LAST, load_checkpoint
from bodymap.train.distributed import select_device, setup, teardown
from bodymap.train.loop import LossFn, TrainConfig, TrainResult, train
from bodymap.train.pretrain import write_history

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", type=Path, required=True, help="template artifact directory")
    parser.add_argument("--render", type=Path, required=True, help="render stage output (coco-like split, video)")
    parser.add_argument("--cse", type=Path, required=True, help="cse_init outputs")
    parser.add_argument("--pseudo-gt", type=Path, required=True, help="pseudo_gt outputs (dense/, sparse/, flow/)")
    parser.add_argument("--pretrained", type=Path, required=True, help="pretrain checkpoint")
    parser.add_argument("--model-dir", type=Path, required=True, help="fine-tuned checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="held-out predictions and evaluation outputs")
    parser.add_argument("--metrics", type=Path, default=None, help="held-out metrics (JSON)")
    parser.add_argument("--plots", type=Path, default=None, help="training curve (CSV)")


def finetune_sources(p: FinetuneParams, params: Params, render: Path, cse: Path, pseudo_gt: Path) -> list[Source]:
    """The training examples of a mode: coco images with sparse or dense labels, plus flow-labelled video frames."""
    if params.pseudo_gt.coco_images is not None:
        images, cse_dir = Path(params.pseudo_gt.coco_images), cse / "coco_train"
    else:
        images, cse_dir = render / "coco_like" / "train" / "images", cse / "coco_like_train"
    sources = [Source(images, pseudo_gt / p.mode, cse_dir)]
    if p.use_flow_labels and (pseudo_gt / "flow").is_dir():
        sources.append(Source(render / "video" / "images", pseudo_gt / "flow", cse / "video"))
    return sources


def finetune_loss(p: FinetuneParams, template: TemplateTensors) -> LossFn:
    """BodyMap's losses, plus the equivariance term on a randomly warped copy of the batch when enabled."""
    weights = LossWeights.from_params(p.losses)
    eq = p.equivariance

    def loss_fn(model, batch, generator):
        outputs = model(batch["image"], batch.get("cse"))
        total, terms = total_loss(outputs, batch, weights, template, generator)
        if eq.weight > 0:
            # Synthetic warp (Slim DensePose's TPS/affine baseline): the features of the warped batch must equal
            # the warped features. Video-pair warps need frame pairs in the batch, which this loader does not draw.
            b, _, h, w = batch["image"].shape
            theta, flow = random_affine_flow(b, h, w, generator)
            grid = torch.nn.functional.affine_grid(theta, (b, 1, h, w), align_corners=True).to(batch["image"].device)
            warp = lambda x: torch.nn.functional.grid_sample(x, grid, align_corners=True)  # noqa: E731
            warped = model(warp(batch["image"]), warp(batch["cse"]) if "cse" in batch else None)
            valid = torch.ones(b, h, w, device=flow.device)
            features_a = outputs.color_logits.flatten(1, 2)
            features_b = warped.color_logits.flatten(1, 2)
            term = equivariance_loss(features_a, features_b, flow.to(features_a.device), valid.to(features_a.device))
            total = total + eq.weight * term
            terms["equivariance"] = float(term.detach())
        return total, terms

    return loss_fn


def held_out_sets(params: Params, render: Path, cse: Path) -> list[tuple[str, str, Path, Path, Path | None]]:
    """(name, GT kind, GT path, split directory to predict, CSE outputs) of the held-out DensePose-COCO set."""
    if params.pseudo_gt.coco_val_annotations is not None:
        raise BodymapError("held-out evaluation on a real DensePose-COCO set is not wired yet; use the coco-like split")
    split = render / "coco_like" / "val"
    sets = [("coco", "coco", split / "annotations.json", split, cse / "coco_like_val")]
    dense_truth = render / "coco_like_dense" / "val"
    if dense_truth.is_dir():
        sets.append(("coco_dense", "dense", dense_truth, split, cse / "coco_like_val"))
    return sets


def evaluate_held_out(
    template_dir: Path, checkpoint: Path, params: Params, render: Path, cse: Path, out: Path
) -> dict[str, Any]:
    """Predict the held-out images with a checkpoint and score them (sparse COCO metrics, and dense if available)."""
    from bodymap.eval.stage import EvalSpec, run_evaluation
    from bodymap.predict import load_bodymap, predict_split

    template = BodyTemplate.load(template_dir)
    device = select_device(params.finetune.train.device)
    model = load_bodymap(checkpoint, device)
    specs, predicted = [], {}
    for name, kind, gt, split, cse_dir in held_out_sets(params, render, cse):
        if split not in predicted:
            predicted[split] = out / "predictions" / split.name
            predict_split(model, template, split, cse_dir, predicted[split], device)
        specs.append(EvalSpec(name=name, kind=kind, gt=gt, predictions=predicted[split], images=split))
    return run_evaluation(template, specs, params.evaluate, out / "evaluation")


def run_finetune(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    p = params.finetune
    template = BodyTemplate.load(args.template)
    pretrained = load_checkpoint(args.pretrained)
    tracker = Tracker()
    metrics: dict[str, Any] = {}
    with tracker.run("finetune", params=p.model_dump(mode="json"), tags={"stage": "finetune", "mode": p.mode}):
        if p.mode == "none":
            args.model_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.pretrained, args.model_dir / LAST)
            checkpoint, seconds = args.model_dir / LAST, 0.0
            if args.plots is not None:
                write_history(args.plots, TrainResult(step=0, checkpoint=checkpoint))  # no curve: header only
        else:
            dataset = DenseDataset(
                finetune_sources(p, params, args.render, args.cse, args.pseudo_gt),
                template.symmetry,
                template.colors,
                template.chart,
                augment_config=AugmentConfig(**p.augment.model_dump()),
            )
            model = create_model(pretrained["model_name"], **pretrained["model_args"])
            device = select_device(p.train.device)
            result = train(
                model,
                dataset,
                finetune_loss(p, TemplateTensors.from_template(template, device)),
                TrainConfig.from_params(p.train),
                args.model_dir,
                pretrained["model_name"],
                pretrained["model_args"],
                params={"finetune": p.model_dump(mode="json"), "pretrain": pretrained.get("params", {})},
                tracker=tracker,
                init_state=pretrained["model"],
            )
            checkpoint, seconds = result.checkpoint, result.seconds
            if args.plots is not None and setup(p.train.device).is_main:
                write_history(args.plots, result)
        if setup(p.train.device).is_main:
            metrics = evaluate_held_out(args.template, checkpoint, params, args.render, args.cse, args.out)
            metrics["train_seconds"] = round(seconds, 1)
            metrics["examples"] = 0 if p.mode == "none" else len(dataset)
            tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            write_run_info(args.model_dir, "finetune", p.model_dump(mode="json"), pretrained=str(args.pretrained))
    teardown()
    return metrics


def main(args: argparse.Namespace, params: Params) -> int:
    metrics = run_finetune(args, params)
    if args.metrics is not None and metrics:
        write_json(args.metrics, metrics)
    return 0
