"""`bodymap pretrain`: BodyMap on the rendered train split with CSE inputs (BodyMap Secs. 3.2-3.6), then scored on
the synthetic validation and test splits with the evaluator."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from bodymap.cli_options import add_stage_inputs, add_training_options
from bodymap.config import LossParams, Params, PretrainParams
from bodymap.data.rendered import DenseDataset, Source
from bodymap.data.sets import rendered_sets
from bodymap.determinism import torch_threads
from bodymap.eval.pipeline import evaluate_checkpoint
from bodymap.io import write_json, write_run_info
from bodymap.losses.total import TemplateTensors, total_loss
from bodymap.models.registry import build_model, model_args, params_overrides
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker
from bodymap.train.distributed import select_device, setup, teardown
from bodymap.train.loop import LossFn, TrainResult, train, write_history

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_inputs(parser, "template", "render", "cse")
    parser.add_argument("--model-dir", type=Path, required=True, help="checkpoint directory (last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="val/test predictions and evaluation outputs")
    parser.add_argument("--metrics", type=Path, default=None, help="val/test metrics (JSON, DVC metrics)")
    parser.add_argument("--plots", type=Path, default=None, help="training curve (CSV, DVC plots)")
    add_training_options(parser)


def bodymap_loss(weights: LossParams, template: TemplateTensors) -> LossFn:
    """The loop's loss function for BodyMap networks (`bodymap.losses.total_loss`)."""

    def loss_fn(model, batch, generator):
        return total_loss(model(batch["image"], batch.get("cse")), batch, weights, template, generator)

    return loss_fn


def train_bodymap(
    template: BodyTemplate,
    dataset: DenseDataset,
    p: PretrainParams,
    model_dir: Path,
    tracker: Tracker,
    init_state: dict[str, torch.Tensor] | None = None,
    stage: str = "pretrain",
    restart: bool = False,
) -> TrainResult:
    """Build the configured network and train it on `dataset` with the shared loop (`restart`: see `train`)."""
    torch.manual_seed(p.train.seed)
    model = build_model(p.model)
    device = select_device(p.train.device)
    tensors = TemplateTensors.from_template(template, device)
    return train(
        model,
        dataset,
        bodymap_loss(p.losses, tensors),
        p.train,
        model_dir,
        p.model.name,
        model_args(p.model.name, **params_overrides(p.model)),
        params={stage: p.model_dump(mode="json")},
        tracker=tracker,
        init_state=init_state,
        restart=restart,
    )


def run_pretrain(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    p = params.pretrain
    template = BodyTemplate.load(args.template)
    dataset = DenseDataset(
        [Source.rendered(args.render / "train", args.cse / "train")],
        template.symmetry,
        template.colors,
        template.chart,
        augment_config=p.augment,
    )
    tracker = Tracker()
    with tracker.run("pretrain", params=p.model_dump(mode="json"), inputs=[args.template, args.render, args.cse]):
        result = train_bodymap(template, dataset, p, args.model_dir, tracker, restart=args.restart)
        metrics: dict[str, Any] = {}
        if setup(p.train.device).is_main:
            sets = rendered_sets(args.render)
            held_out = [sets[name] for name in ("val", "test") if sets[name].exists()]
            # rendered sets only, already at the resolution pretraining trains on: no size, the letterbox is scale 1
            metrics = evaluate_checkpoint(
                args.template, result.checkpoint, held_out, args.cse, args.out, params.evaluate, p.train.device
            )
            metrics["train_seconds"] = round(result.seconds, 1)
            tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            tracker.log_artifact(args.out / "evaluation")
            if args.plots is not None:
                write_history(args.plots, result)
            write_run_info(args.model_dir, "pretrain", p.model_dump(mode="json"))
    teardown()
    return metrics


def main(args: argparse.Namespace, params: Params) -> int:
    with torch_threads(params.pretrain.train.threads):  # training and inference: results depend on the count
        metrics = run_pretrain(args, params)
    if args.metrics is not None and metrics:
        write_json(args.metrics, metrics)
    return 0
