"""`bodymap finetune`: adapt the pretrained BodyMap to DensePose-COCO (BodyMap supp. Sec. 7, Tables 7-8).

mode `none` keeps the pretrained weights; `sparse` trains on the annotated points only (plus silhouettes); `dense`
trains on the pseudo-GT maps weighted by their confidence. `use_flow_labels` adds video frames labelled by
Slim DensePose's flow propagation, `synthetic_images` mixes rendered training images back in (against
forgetting), and `equivariance.weight` > 0 adds the equivariance loss, on video frame pairs with estimated flow
(`flow`) or on synthetic warps (`tps`: a random thin-plate-spline warp of the batch), Slim DensePose's
comparison. Scored on the held-out set.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from bodymap.cli_options import add_stage_inputs, add_training_options
from bodymap.config import FinetuneParams, Params
from bodymap.data.pairs import FramePairs, WithPairs
from bodymap.data.rendered import DenseDataset, Source
from bodymap.data.sets import ImageSet, pipeline_sets
from bodymap.determinism import torch_threads
from bodymap.eval.pipeline import evaluate_checkpoint
from bodymap.io import write_json, write_run_info
from bodymap.losses.equivariance import equivariance_loss, synthetic_warp_loss
from bodymap.losses.total import TemplateTensors, total_loss
from bodymap.models.registry import create_model
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker
from bodymap.train.checkpoint import LAST, load_checkpoint
from bodymap.train.distributed import select_device, setup, teardown
from bodymap.train.loop import LossFn, TrainResult, train, write_history

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_inputs(parser, "template", "render", "cse", "pseudo_gt")
    parser.add_argument("--pretrained", type=Path, required=True, help="pretrain checkpoint")
    parser.add_argument("--model-dir", type=Path, required=True, help="fine-tuned checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="held-out predictions and evaluation outputs")
    parser.add_argument("--metrics", type=Path, default=None, help="held-out metrics (JSON)")
    parser.add_argument("--plots", type=Path, default=None, help="training curve (CSV)")
    add_training_options(parser)


def finetune_sources(p: FinetuneParams, sets: dict[str, ImageSet], cse: Path, pseudo_gt: Path) -> list[Source]:
    """The training examples of a mode: coco images with sparse or dense labels, plus flow-labelled video frames and
    the first `synthetic_images` rendered training images."""
    sources = [Source(sets["coco_train"].image_dir, pseudo_gt / p.mode, cse / "coco_train")]
    if p.use_flow_labels and (pseudo_gt / "flow").is_dir():
        sources.append(Source(sets["video_train"].image_dir, pseudo_gt / "flow", cse / "video_train"))
    if p.synthetic_images:
        sources.append(Source.rendered(sets["train"].root, cse / "train", limit=p.synthetic_images))
    return sources


def finetune_loss(p: FinetuneParams, template: TemplateTensors) -> LossFn:
    """BodyMap's losses, plus Slim DensePose's equivariance term when `equivariance.weight` > 0.

    warp 'flow': features of video frame t must match those of frame t + k moved back along the estimated flow
    (the batch carries a frame pair, `bodymap.data.pairs`). warp 'tps': the synthetic baseline, a random
    thin-plate-spline warp of the batch's own images (`random_tps_warp`) with its exact flow, in-frame pixels only.
    """
    eq = p.equivariance

    def loss_fn(model, batch, generator):
        outputs = model(batch["image"], batch.get("cse"))
        total, terms = total_loss(outputs, batch, p.losses, template, generator)
        if eq.weight > 0:
            if eq.warp == "flow":
                features_a = model(batch["pair_image_a"], batch["pair_cse_a"]).color_features
                features_b = model(batch["pair_image_b"], batch["pair_cse_b"]).color_features
                term = equivariance_loss(features_a, features_b, batch["pair_flow"], batch["pair_valid"])
            else:
                term = synthetic_warp_loss(
                    lambda image, cse: model(image, cse).color_features,
                    batch["image"],
                    batch.get("cse"),
                    outputs.color_features,
                    generator,
                )
            total = total + eq.weight * term
            terms["equivariance"] = float(term.detach())
        return total, terms

    return loss_fn


def run_finetune(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    p = params.finetune
    template = BodyTemplate.load(args.template)
    pretrained = load_checkpoint(args.pretrained)
    sets = pipeline_sets(args.render, params.data.coco)
    tracker = Tracker()
    metrics: dict[str, Any] = {}
    inputs = [args.template, args.render, args.cse, args.pseudo_gt, args.pretrained.parent]
    with tracker.run("finetune", params=p.model_dump(mode="json"), tags={"mode": p.mode}, inputs=inputs):
        if p.mode == "none":
            args.model_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.pretrained, args.model_dir / LAST)
            checkpoint, seconds = args.model_dir / LAST, 0.0
            if args.plots is not None:
                write_history(args.plots, TrainResult(step=0, checkpoint=checkpoint))  # no curve: header only
        else:
            dataset = DenseDataset(
                finetune_sources(p, sets, args.cse, args.pseudo_gt),
                template.symmetry,
                template.colors,
                template.chart,
                augment_config=p.augment,
                size=params.render.image_size,  # the resolution pretraining saw; photos are letterboxed to it
            )
            if p.equivariance.weight > 0 and p.equivariance.warp == "flow":
                flow = params.pseudo_gt.flow
                pairs = FramePairs(
                    sets["video_train"].root, args.cse / "video_train", template.colors, flow.window, flow.method,
                    flow.max_fb_error_px,
                )  # fmt: skip
                dataset = WithPairs(dataset, pairs)
            model = create_model(pretrained["model_name"], **pretrained["model_args"])
            device = select_device(p.train.device)
            result = train(
                model,
                dataset,
                finetune_loss(p, TemplateTensors.from_template(template, device)),
                p.train,
                args.model_dir,
                pretrained["model_name"],
                pretrained["model_args"],
                params={"finetune": p.model_dump(mode="json"), "pretrain": pretrained.get("params", {})},
                tracker=tracker,
                init_state=pretrained["model"],
                restart=args.restart,
            )
            checkpoint, seconds = result.checkpoint, result.seconds
            if args.plots is not None and setup(p.train.device).is_main:
                write_history(args.plots, result)
        if setup(p.train.device).is_main:
            # Validation only: fine-tuning must raise the COCO-format figures without costing the synthetic ones.
            held_out = [sets[name] for name in ("coco_val", "val") if sets[name].exists()]
            size = params.render.image_size  # photos letterboxed to the training resolution, as in training
            metrics = evaluate_checkpoint(
                args.template, checkpoint, held_out, args.cse, args.out, params.evaluate, p.train.device, size
            )
            # The same sets for the weights fine-tuning started from, so what it changed is read in one file.
            if p.mode == "none":  # the same weights: the same figures
                metrics |= {f"pretrained/{k.removeprefix('bodymap/')}": v for k, v in metrics.items()}
            else:
                metrics |= evaluate_checkpoint(
                    args.template, args.pretrained, held_out, args.cse, args.out / "pretrained", params.evaluate,
                    p.train.device, size, name="pretrained",
                )  # fmt: skip
            metrics["train_seconds"] = round(seconds, 1)
            metrics["examples"] = 0 if p.mode == "none" else len(dataset)
            tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            tracker.log_artifact(args.out / "evaluation")
            write_run_info(args.model_dir, "finetune", p.model_dump(mode="json"), pretrained=str(args.pretrained))
    teardown()
    return metrics


def main(args: argparse.Namespace, params: Params) -> int:
    with torch_threads(params.finetune.train.threads):  # training and inference: results depend on the count
        metrics = run_finetune(args, params)
    if args.metrics is not None and metrics:
        write_json(args.metrics, metrics)
    return 0
