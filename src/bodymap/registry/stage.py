"""`bodymap register`: log the fine-tuned model to MLflow, register a version, and promote it only if it wins."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodymap.cli_options import add_stage_inputs
from bodymap.config import Params, RegisterParams
from bodymap.cse.infer import load_cse_model
from bodymap.errors import BodymapError
from bodymap.io import write_json
from bodymap.predict import load_bodymap
from bodymap.registry.packaging import BodyMapPipeline
from bodymap.registry.promote import Decision, promote_version
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker, with_retry
from bodymap.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

TEMPLATE_FILES = ("template.npz", "template.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="fine-tuned checkpoint directory (last.pt)")
    parser.add_argument("--cse-model", type=Path, required=True, help="CSE checkpoint")
    add_stage_inputs(parser, "template")
    parser.add_argument("--metrics", type=Path, required=True, help="the evaluate stage's metrics (JSON)")
    parser.add_argument("--out", type=Path, required=True, help="decision record (JSON)")


def build_pipeline(model_dir: Path, cse_model: Path, template: BodyTemplate) -> tuple[BodyMapPipeline, np.ndarray]:
    """The deployable module and an input example at the training resolution."""
    bodymap = load_bodymap(model_dir / "last.pt")
    size = int(load_checkpoint(model_dir / "last.pt")["model_args"].get("img_size", 128))
    pipeline = BodyMapPipeline(load_cse_model(cse_model), bodymap, template.colors, input_size=size).eval()
    example = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    return pipeline, example


def register(
    pipeline: BodyMapPipeline,
    example: np.ndarray,
    template_dir: Path,
    metrics: dict[str, Any],
    p: RegisterParams,
    tracker: Tracker,
) -> tuple[str, Decision]:
    """Log the model in the tracker's run, register a version of `p.model_name`, run the promotion gate."""
    import mlflow
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = pipeline(torch.from_numpy(example)).numpy()
    # Pickle, not torch.export: CSE decoding picks foreground pixels (data-dependent shapes), which export cannot
    # trace. MLflow warns about pickle on every save; the model is our own code, so that warning is noise here.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    info = with_retry(
        mlflow.pytorch.log_model,
        pipeline,
        name="model",
        input_example=example,
        signature=infer_signature(example, output),
        serialization_format="pickle",
        extra_files=[str(template_dir / f) for f in TEMPLATE_FILES],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "scipy", "timm"],
        registered_model_name=p.model_name,
        await_registration_for=60,
    )
    version = str(info.registered_model_version)
    gate = {"primary": p.primary_metric, "margin": p.margin, "guards": dict(p.guard_metrics)}
    decision = promote_version(mlflow.MlflowClient(), p.model_name, version, metrics, gate)
    return version, decision


def run_register(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    p = params.register
    try:
        metrics = json.loads(Path(args.metrics).read_text())
    except (OSError, ValueError) as exc:
        raise BodymapError(f"{args.metrics}: cannot read the evaluation metrics ({exc})") from None
    if p.primary_metric not in metrics:
        raise BodymapError(
            f"{args.metrics}: field '{p.primary_metric}': missing (register.primary_metric); "
            f"available: {', '.join(k for k in metrics if k.endswith('_ap'))}"
        )
    template = BodyTemplate.load(args.template)
    pipeline, example = build_pipeline(args.model_dir, args.cse_model, template)
    tracker = Tracker(experiment=p.experiment)
    with tracker.run("register", params=p.model_dump(mode="json"), inputs=[args.model_dir, args.template]):
        version, decision = register(pipeline, example, args.template, metrics, p, tracker)
        tracker.set_tags({"model_version": version, "decision": "promoted" if decision.promote else "rejected"})
    return {
        "model_name": p.model_name,
        "version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger": decision.challenger,
        "champion": decision.champion,
    }


def main(args: argparse.Namespace, params: Params) -> int:
    record = run_register(args, params)
    write_json(args.out, record)
    log.info(
        "register: %s v%s %s: %s",
        record["model_name"],
        record["version"],
        "promoted to champion" if record["promoted"] else "not promoted",
        record["reason"],
    )
    return 0
