"""One KFP component per pipeline stage: a thin shell over the `bodymap <stage>` command DVC runs too.

Each body maps its artifacts to the command's path options and calls `run_stage`; the stage parameters arrive as
one JSON text per params section (`<section>_params`), passed as `--set <section>=...` on top of the schema
defaults. A component takes the sections its stage reads: its own, plus `data` (which DensePose-COCO set) and
`evaluate` (how models are scored) for the stages that pick data sets or score a model.
"""

from typing import List  # noqa: UP035 (KFP reads Input[List[...]] from the annotation)

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components._shell import component, run_stage, run_training_job, run_training_stage


@component()
def template(template_params: str, template: Output[Dataset], metrics: Output[Metrics]):
    """Build the body template (mesh, DensePose charts, colour code, geodesics, LBO basis) from Anny."""
    run_stage("template", {"--out": template.path, "--metrics": metrics.path}, {"template": template_params}, metrics)


@component()
def render(template: Input[Dataset], render_params: str, render: Output[Dataset], metrics: Output[Metrics]):
    """Render synthetic clothed people with exact dense GT: train/val/test, the coco-like splits and video."""
    options = {"--template": template.path, "--out": render.path, "--metrics": metrics.path}
    run_stage("render", options, {"render": render_params}, metrics)


@component()
def cse_init(
    template: Input[Dataset],
    render: Input[Dataset],
    cse_init_params: str,
    data_params: str,
    evaluate_params: str,
    model: Output[Model],
    cse: Output[Dataset],
    metrics: Output[Metrics],
    gpus: int = 0,
):
    """Train CSE on the rendered people, infer it on every image set, score it as the baseline."""
    options = {"--template": template.path, "--render": render.path, "--out": cse.path, "--metrics": metrics.path}
    sections = {"cse_init": cse_init_params, "data": data_params, "evaluate": evaluate_params}
    run_training_stage("cse_init", options, model, sections, metrics, procs=max(gpus, 1))


@component()
def cse_train(
    template: Input[Dataset],
    render: Input[Dataset],
    cse_init_params: str,
    data_params: str,
    evaluate_params: str,
    model: Output[Model],
    metrics: Output[Metrics],
    gpus: int = 0,
):
    """Train CSE on the rendered people (the first step of a sharded cse_init: inference fans out after it)."""
    options = {"--template": template.path, "--render": render.path, "--metrics": metrics.path, "--train-only": []}
    sections = {"cse_init": cse_init_params, "data": data_params, "evaluate": evaluate_params}
    run_training_stage("cse_init", options, model, sections, metrics, procs=max(gpus, 1))


@component()
def cse_infer(
    template: Input[Dataset],
    render: Input[Dataset],
    model: Input[Model],
    shard: int,
    num_shards: int,
    cse_init_params: str,
    data_params: str,
    cse_shard: Output[Dataset],
    gpus: int = 0,
):
    """Infer the trained CSE on one shard of every image set's batches (on `gpus` GPUs' node: one is used)."""
    from bodymap.train.checkpoint import LAST

    options = {"--template": template.path, "--render": render.path, "--model": f"{model.path}/{LAST}"}
    options.update({"--shard": shard, "--num-shards": num_shards, "--out": cse_shard.path})
    run_stage("cse_init", options, {"cse_init": cse_init_params, "data": data_params})


@component()
def cse_merge(
    template: Input[Dataset],
    render: Input[Dataset],
    shards: Input[List[Dataset]],  # noqa: UP006
    cse_init_params: str,
    data_params: str,
    evaluate_params: str,
    cse: Output[Dataset],
    metrics: Output[Metrics],
):
    """Join the CSE inference shards (the files one process writes) and score CSE as the baseline."""
    options = {"--template": template.path, "--render": render.path, "--merge": [s.path for s in shards]}
    sections = {"cse_init": cse_init_params, "data": data_params, "evaluate": evaluate_params}
    run_stage("cse_init", {**options, "--out": cse.path, "--metrics": metrics.path}, sections, metrics)


@component()
def pseudo_gt(
    template: Input[Dataset],
    render: Input[Dataset],
    cse: Input[Dataset],
    pseudo_gt_params: str,
    data_params: str,
    pseudo_gt: Output[Dataset],
    metrics: Output[Metrics],
):
    """Dense pseudo-GT on DensePose-COCO (real or coco-like) from sparse points + CSE; flow-propagated video labels."""
    options = {"--template": template.path, "--render": render.path, "--cse": cse.path, "--out": pseudo_gt.path}
    sections = {"pseudo_gt": pseudo_gt_params, "data": data_params}
    run_stage("pseudo_gt", {**options, "--metrics": metrics.path}, sections, metrics)


@component(extra_helpers=(run_training_job,))
def pretrain(
    template: Input[Dataset],
    render: Input[Dataset],
    cse: Input[Dataset],
    pretrain_params: str,
    evaluate_params: str,
    cluster_params: str,
    model: Output[Model],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    curve: Output[Dataset],
):
    """Train BodyMap on the rendered people with CSE inputs; score it on the synthetic test split.

    In this pod on `cluster.gpus_per_node` GPUs; with `cluster.nodes` > 1 as a multi-node training job instead.
    """
    import json

    inputs = {"--template": template, "--render": render, "--cse": cse}
    outputs = {"--model-dir": model, "--out": evaluation, "--metrics": metrics, "--plots": curve}
    sections = {"pretrain": pretrain_params, "evaluate": evaluate_params}  # rendered sets only: no `data`
    cluster = json.loads(cluster_params)
    if cluster["nodes"] > 1:
        run_training_job("pretrain", inputs, outputs, sections, cluster_params, metrics)
    else:
        paths = {flag: artifact.path for flag, artifact in {**inputs, **outputs}.items() if flag != "--model-dir"}
        run_training_stage("pretrain", paths, model, sections, metrics, procs=max(cluster["gpus_per_node"], 1))


@component()
def finetune(
    template: Input[Dataset],
    render: Input[Dataset],
    cse: Input[Dataset],
    pseudo_gt: Input[Dataset],
    pretrained: Input[Model],
    finetune_params: str,
    pseudo_gt_params: str,
    data_params: str,
    evaluate_params: str,
    render_params: str,
    model: Output[Model],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    curve: Output[Dataset],
    gpus: int = 0,
):
    """Fine-tune the pretrained BodyMap on DensePose-COCO (mode none / sparse / dense); score it on the held-out set."""
    from bodymap.train.checkpoint import LAST

    inputs = {"--template": template.path, "--render": render.path, "--cse": cse.path, "--pseudo-gt": pseudo_gt.path}
    outputs = {"--out": evaluation.path, "--metrics": metrics.path, "--plots": curve.path}
    sections = {"finetune": finetune_params, "data": data_params, "evaluate": evaluate_params}
    sections["pseudo_gt"] = pseudo_gt_params  # flow settings of the equivariance pairs
    sections["render"] = render_params  # fine-tuning letterboxes photos to the render resolution
    options = {**inputs, "--pretrained": f"{pretrained.path}/{LAST}", **outputs}
    run_training_stage("finetune", options, model, sections, metrics, procs=max(gpus, 1))


@component()
def evaluate(
    template: Input[Dataset],
    render: Input[Dataset],
    cse: Input[Dataset],
    model: Input[Model],
    evaluate_params: str,
    data_params: str,
    render_params: str,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """BodyMap and the CSE baseline side by side on the synthetic test, held-out COCO and video sets."""
    import shutil

    from bodymap.train.checkpoint import LAST

    checkpoint = f"{model.path}/{LAST}"
    inputs = {"--template": template.path, "--render": render.path, "--cse": cse.path, "--model": checkpoint}
    # render: photos are letterboxed to the training resolution, render.image_size
    sections = {"evaluate": evaluate_params, "data": data_params, "render": render_params}
    run_stage("evaluate", {**inputs, "--out": evaluation.path, "--metrics": metrics.path}, sections, metrics)
    shutil.copyfile(f"{evaluation.path}/report/report.md", report.path)


@component()
def evaluate_shard(
    template: Input[Dataset],
    render: Input[Dataset],
    cse: Input[Dataset],
    model: Input[Model],
    shard: int,
    num_shards: int,
    evaluate_params: str,
    data_params: str,
    render_params: str,
    predictions: Output[Dataset],
):
    """BodyMap's predictions of one shard of every report set's batches (scored by evaluate_merge)."""
    from bodymap.train.checkpoint import LAST

    inputs = {"--template": template.path, "--render": render.path, "--cse": cse.path}
    shards = {
        "--model": f"{model.path}/{LAST}",
        "--shard": shard,
        "--num-shards": num_shards,
        "--out": predictions.path,
    }
    sections = {"evaluate": evaluate_params, "data": data_params, "render": render_params}
    run_stage("evaluate", {**inputs, **shards}, sections)


@component()
def evaluate_merge(
    template: Input[Dataset],
    render: Input[Dataset],
    cse: Input[Dataset],
    model: Input[Model],
    shards: Input[List[Dataset]],  # noqa: UP006
    evaluate_params: str,
    data_params: str,
    render_params: str,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Join the prediction shards and score BodyMap and the CSE baseline side by side (as `evaluate` does)."""
    import shutil

    from bodymap.train.checkpoint import LAST

    inputs = {"--template": template.path, "--render": render.path, "--cse": cse.path}
    options = {**inputs, "--model": f"{model.path}/{LAST}", "--merge": [s.path for s in shards]}
    options.update({"--out": evaluation.path, "--metrics": metrics.path})
    sections = {"evaluate": evaluate_params, "data": data_params, "render": render_params}
    run_stage("evaluate", options, sections, metrics)
    shutil.copyfile(f"{evaluation.path}/report/report.md", report.path)


@component()
def register(
    template: Input[Dataset],
    cse_model: Input[Model],
    model: Input[Model],
    metrics: Input[Metrics],
    register_params: str,
    decision: Output[Artifact],
):
    """Register the fine-tuned model in MLflow as `challenger`; promote it to `champion` only when it wins.

    `decision` is the JSON record: version, promoted or not, why, and both models' numbers.
    """
    from bodymap.train.checkpoint import LAST

    options = {"--model-dir": model.path, "--cse-model": f"{cse_model.path}/{LAST}", "--template": template.path}
    run_stage("register", {**options, "--metrics": metrics.path, "--out": decision.path}, {"register": register_params})
