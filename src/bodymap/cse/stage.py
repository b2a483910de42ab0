"""`bodymap cse_init`: train CSE on the rendered train split, infer on every image set, score the baseline row every
BodyMap result is compared with.

Inference grows with the data, so it shards (`bodymap.shards`): locally `cse_init.workers` processes share it; on a
cluster the stage runs in three steps, `--train-only`, then `--model CKPT --shard i --num-shards n --out SHARD` for
each shard, then `--merge SHARD... --out DIR`, which joins the shards (the same files one process writes) and scores
the baseline.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from bodymap.cli_options import add_stage_inputs, add_training_options
from bodymap.config import CseParams, EvaluateParams, Params
from bodymap.cse.infer import infer_sets, infer_sets_in_workers
from bodymap.cse.loss import foreground_loss, soft_embedding_loss
from bodymap.cse.model import CseNet
from bodymap.data.augment import NO_AUGMENT
from bodymap.data.rendered import DenseDataset, Source
from bodymap.data.sets import ImageSet, pipeline_sets
from bodymap.determinism import torch_threads
from bodymap.errors import BodymapError
from bodymap.eval.floors import FLOORS, write_floor_predictions
from bodymap.eval.run import run_evaluation, specs_for
from bodymap.io import write_json, write_run_info
from bodymap.losses.geodesic import sample_pixels
from bodymap.losses.total import TemplateTensors
from bodymap.shards import merge_shards
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker
from bodymap.train import train
from bodymap.train.distributed import select_device, setup, teardown
from bodymap.train.loop import write_history

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_inputs(parser, "template", "render")
    parser.add_argument("--model-dir", type=Path, default=None, help="where the CSE checkpoint goes (training)")
    parser.add_argument("--out", type=Path, default=None, help="CSE outputs, one subdirectory per image set")
    parser.add_argument("--metrics", type=Path, default=None, help="training figures and baseline metrics (JSON)")
    parser.add_argument("--plots", type=Path, default=None, help="training curve (CSV, DVC plots)")
    add_training_options(parser)
    steps = parser.add_argument_group("sharded runs", "the stage in steps, for a cluster that fans inference out")
    steps.add_argument("--train-only", action="store_true", help="train and checkpoint; no inference, no --out")
    steps.add_argument("--model", type=Path, default=None, help="a trained CSE checkpoint: infer with it, no training")
    steps.add_argument("--shard", type=int, default=0, help="with --model: infer only this shard (0-based)")
    steps.add_argument("--num-shards", type=int, default=1, help="with --model: the number of shards")
    steps.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="SHARD_DIR",
        help="join these shard outputs into --out and score the baseline",
    )  # fmt: skip


def build_cse(template: BodyTemplate, p: CseParams) -> tuple[CseNet, dict[str, Any]]:
    """The CSE network for a template, and the arguments that rebuild it from a checkpoint."""
    args = {
        "backbone": p.backbone,
        "embed_dim": p.embed_dim,
        "num_vertices": template.num_vertices,
        "basis_k": int(template.lbo_basis.shape[1]),
        "decoder_channels": 64,
        "input_scale": p.input_scale,
    }
    torch.manual_seed(p.train.seed)
    model = CseNet(
        p.backbone, p.embed_dim, torch.from_numpy(template.lbo_basis), args["decoder_channels"], p.input_scale
    )
    return model, args


def crop_around_people(
    batch: dict[str, torch.Tensor], size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A `size` x `size` window of every image (full resolution), centred on one of its foreground pixels drawn at
    random and shifted inside the image; an image without foreground gets a random window.

    The network is convolutional, so it trains on the windows and infers on whole images at the same scale: a
    window of 96 at 128^2 is ~0.56 of the pixels and keeps most of a person; a step takes ~0.7 of the time."""
    h, w = batch["image"].shape[-2:]
    if size >= min(h, w):
        return batch
    b, y, x = sample_pixels(batch["vertex"] >= 0, 1, generator)  # one person pixel per image that has one
    centres = {int(i): (int(cy), int(cx)) for i, cy, cx in zip(b, y, x, strict=True)}
    corners = []
    for i in range(len(batch["image"])):
        cy, cx = centres.get(i) or (
            int(torch.randint(h, (1,), generator=generator)),
            int(torch.randint(w, (1,), generator=generator)),
        )
        corners.append((min(max(cy - size // 2, 0), h - size), min(max(cx - size // 2, 0), w - size)))
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 3 and tuple(value.shape[-2:]) == (h, w):
            out[key] = torch.stack(
                [v[..., y : y + size, x : x + size] for v, (y, x) in zip(value, corners, strict=True)]
            )
        else:
            out[key] = value
    return out


def make_loss(template: BodyTemplate, p: CseParams):
    """The CSE training objective: soft geodesic embedding loss on sampled pixels + foreground cross-entropy.

    The geodesic table lives on the training device (`TemplateTensors`), so the rows never come from the host."""
    tables = TemplateTensors.from_template(template, select_device(p.train.device))

    def loss_fn(model, batch, generator):
        if p.train_crop:
            batch = crop_around_people(batch, p.train_crop, generator)
        out = model(batch["image"])
        b, y, x = sample_pixels(batch["vertex"] >= 0, p.pixels_per_image, generator)
        gt_vertex = batch["vertex"][b, y, x]
        emb = out["embedding"][b, :, y, x]  # (N, D)
        rows = tables.geodesic_rows(gt_vertex)  # (N, V)
        vertex_embedding = (model.module if hasattr(model, "module") else model).vertex_embedding()
        embed = soft_embedding_loss(emb, vertex_embedding, rows, p.sigma_geodesic_m, p.sigma_embedding)
        fg = foreground_loss(out["fg_logits"], batch["mask"])
        total = p.embed_weight * embed + p.foreground_weight * fg
        return total, {"embed": float(embed.detach()), "foreground": float(fg.detach())}

    return loss_fn


def cse_training_split(render_dir: Path) -> Path:
    """CSE's training images: its own split when the render has one (`render.cse_train_images`), else `train`."""
    own = render_dir / "cse_train"
    return own if (own / "gt").is_dir() and any((own / "gt").iterdir()) else render_dir / "train"


def evaluate_baseline(
    template: BodyTemplate, sets: dict[str, ImageSet], out_dir: Path, evaluate: EvaluateParams
) -> dict[str, Any]:
    """Score CSE (the baseline row) and the trivial floors on its silhouettes on the validation and test splits
    and the held-out COCO-format set."""
    specs = []
    for set_name in ("val", "test"):
        if not sets[set_name].exists():
            continue
        specs += specs_for("cse", sets[set_name], out_dir / set_name, set_name)
        for floor in FLOORS:
            floor_dir = out_dir / "floors" / floor / set_name
            write_floor_predictions(out_dir / set_name, floor_dir, floor, template)
            specs += specs_for(floor, sets[set_name], floor_dir, set_name)
    if sets["coco_val"].exists():
        specs += specs_for("cse", sets["coco_val"], out_dir / "coco_val", "coco_val")
    return run_evaluation(template, specs, evaluate, out_dir / "evaluation")


def run_cse_init(
    template_dir: Path,
    render_dir: Path,
    model_dir: Path,
    out_dir: Path | None,
    params: Params,
    plots: Path | None = None,
    restart: bool = False,
) -> dict:
    """Train, infer on every image set (in `cse_init.workers` processes), score the baseline; returns the figures
    for the metrics file. `out_dir` None trains only (the first step of a sharded run).

    restart: train from step 0 even when `model_dir` holds a checkpoint (see `bodymap.train.train`)."""
    p = params.cse_init
    template = BodyTemplate.load(template_dir)
    model, model_args = build_cse(template, p)
    dataset = DenseDataset(
        [Source.rendered(cse_training_split(render_dir))],
        template.symmetry,
        template.colors,
        template.chart,
        augment_config=NO_AUGMENT.model_copy(update={"flip": p.flip_probability}),  # flips only
    )
    tracker = Tracker()
    figures: dict[str, Any] = {}
    with tracker.run("cse_init", params=p.model_dump(mode="json"), inputs=[template_dir, render_dir]):
        result = train(
            model,
            dataset,
            make_loss(template, p),
            p.train,
            model_dir,
            "cse",
            model_args,
            params=p.model_dump(mode="json"),
            tracker=tracker,
            restart=restart,
        )
        if setup(p.train.device).is_main:
            if out_dir is not None:
                figures.update(infer_and_score(template, render_dir, result.checkpoint, out_dir, params))
                tracker.log_artifact(out_dir / "evaluation")
            if plots is not None:
                write_history(plots, result)
            figures.update(
                train_seconds=round(result.seconds, 1),
                final_loss=result.history[-1]["loss"] if result.history else None,
            )
            tracker.log_metrics({k: v for k, v in figures.items() if isinstance(v, int | float)})
        write_run_info(model_dir, "cse_init", p.model_dump(mode="json"))
    teardown()
    return figures


def _sets_to_infer(render_dir: Path, params: Params) -> dict[str, list]:
    """Every image set later stages read that exists: name -> its images."""
    return {name: s.images() for name, s in pipeline_sets(render_dir, params.data.coco).items() if s.exists()}


def infer_and_score(
    template: BodyTemplate, render_dir: Path, checkpoint: Path, out_dir: Path, params: Params
) -> dict[str, Any]:
    """CSE on every image set into `out_dir/<set>/` (sharded over `cse_init.workers` processes), then the baseline
    scores; the figures (`images_<set>` and the baseline metrics)."""
    p = params.cse_init
    device = select_device(p.train.device)
    counts = infer_sets_in_workers(
        checkpoint, _sets_to_infer(render_dir, params), out_dir, template.name, device, p.vertex_chunk, p.workers
    )
    figures: dict[str, Any] = {f"images_{name}": count for name, count in counts.items()}
    figures.update(evaluate_baseline(template, pipeline_sets(render_dir, params.data.coco), out_dir, params.evaluate))
    return figures


def merge_and_score(
    template_dir: Path, render_dir: Path, shard_dirs: list[Path], out_dir: Path, params: Params
) -> dict[str, Any]:
    """The last step of a sharded run: join the inference shards into `out_dir` and score the baseline."""
    template = BodyTemplate.load(template_dir)
    tracker = Tracker()
    with tracker.run("cse_init", params=params.cse_init.model_dump(mode="json"), tags={"step": "merge"}):
        counts = merge_shards(shard_dirs, out_dir, "cse")
        figures: dict[str, Any] = {f"images_{name}": count for name, count in counts.items()}
        figures.update(
            evaluate_baseline(template, pipeline_sets(render_dir, params.data.coco), out_dir, params.evaluate)
        )
        tracker.log_metrics({k: v for k, v in figures.items() if isinstance(v, int | float)})
        tracker.log_artifact(out_dir / "evaluation")
    return figures


def main(args: argparse.Namespace, params: Params) -> int:
    with torch_threads(params.cse_init.train.threads):  # training and inference: results depend on the count
        if args.merge:
            if args.out is None:
                raise BodymapError("--merge needs --out, where the joined CSE outputs go")
            figures = merge_and_score(args.template, args.render, args.merge, args.out, params)
        elif args.model is not None:
            if args.out is None:
                raise BodymapError("--model (inference only) needs --out, where this shard's CSE outputs go")
            counts = infer_sets(
                args.model, _sets_to_infer(args.render, params), args.out, BodyTemplate.load(args.template).name,
                select_device(params.cse_init.train.device), params.cse_init.vertex_chunk,
                shard=args.shard, num_shards=args.num_shards,
            )  # fmt: skip
            figures = {f"images_{name}": count for name, count in counts.items()}
        else:
            if args.model_dir is None or (args.out is None and not args.train_only):
                raise BodymapError("training needs --model-dir, and --out unless --train-only")
            out = None if args.train_only else args.out
            figures = run_cse_init(args.template, args.render, args.model_dir, out, params, args.plots, args.restart)
    if args.metrics is not None:
        write_json(args.metrics, figures)
    log.info("cse_init: %s", {k: v for k, v in figures.items() if "/" not in k or k.endswith(("gpsm_ap", "cm_10"))})
    return 0
