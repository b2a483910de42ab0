"""The bodymap Kubeflow pipeline: the same stage chain as dvc.yaml, placed on a Kubernetes cluster.

    template -> render -> cse_init -> pseudo_gt --> finetune -> evaluate -> register
                                  \\-> pretrain -/

Two kinds of settings, on purpose:
- **Stage parameters are run parameters.** Each params.yaml section is one pipeline parameter `<section>_params`
  (JSON text, default: that section of the params file compiled from), editable in the KFP UI per run. They are
  JSON text rather than KFP dicts because KFP stores dict values as protobuf Structs, which turn every int into a
  float (`steps: 200` -> `200.0`), and the strict schema rightly rejects that; JSON text also keeps `null`s.
- **The cluster shape is compiled in.** Image, GPU type and count, V100 node label and taint, Secret names, shm
  size and node count come from the `cluster` section at compile time: KFP fixes a pod's image and placement in
  the pipeline spec. The one exception is the GPU count of `cse_init` and `finetune` (`<stage>_gpus`, default 0),
  which reaches their pods through a small `gpu_placement` task.

Sharding: with `cluster.shards` > 1 (compiled in, like the node count) the work that grows with the data fans out
with `dsl.ParallelFor`: cse_init becomes train -> one inference task per shard -> merge + baseline, and evaluate
becomes one prediction task per shard -> merge + scoring (`bodymap.shards`: the merged files are those one task
writes). With 1 (the default) each is one task, as below.

Caching: every stage is a pure function of its inputs, its params sections and the image, which is what KFP's
cache key covers, so all are cached except `register`, which reads and moves the MLflow registry's aliases (the
current `champion` is no input). A new image must get a new tag: the cache cannot see code inside an unchanged tag.
`enable_caching=False` at submission re-runs everything.

MLflow: each stage logs its own run to the server of the `mlflow` Secret. They are not nested under a pipeline run
(`BODYMAP_PIPELINE_RUN_ID`): that id would have to reach every stage as an input, which changes every run and would
make KFP's cache miss on every stage.
"""

import json

from kfp import dsl, kubernetes
from kfp.dsl import Metrics
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from bodymap.cluster.manifest import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS, SHM_VOLUME, USER_ID, placement
from bodymap.config import SHARED_SECTIONS, STAGES, ClusterParams, Params, section
from components import (
    cse_infer,
    cse_init,
    cse_merge,
    cse_train,
    evaluate,
    evaluate_merge,
    evaluate_shard,
    finetune,
    gpu_placement,
    pretrain,
    pseudo_gt,
    register,
    render,
    template,
)

PIPELINE_NAME = "bodymap"
DISPLAY_NAMES = {
    "template": "template: body template",
    "render": "render: synthetic people",
    "cse_init": "cse_init: CSE baseline",
    "pseudo_gt": "pseudo_gt: dense pseudo-GT",
    "pretrain": "pretrain: BodyMap on synthetic data",
    "finetune": "finetune: BodyMap on DensePose-COCO",
    "evaluate": "evaluate: BodyMap vs CSE",
    "register": "register: MLflow model registry",
    # The steps of the sharded stages (cluster.shards > 1).
    "cse_train": "cse_init: train CSE",
    "cse_infer": "cse_init: CSE inference shard",
    "cse_merge": "cse_init: merge shards, CSE baseline",
    "evaluate_shard": "evaluate: BodyMap predictions shard",
    "evaluate_merge": "evaluate: merge shards, BodyMap vs CSE",
}
# (CPU, memory) of the pods that are not training pods; requests equal limits, so the namespace LimitRange's
# defaults (2 CPUs, 4 GiB) never cap them. Training pods take `cluster.cpu_per_node` / `memory_per_node`.
POD_SIZES = {
    "template": ("2", "8Gi"),
    "render": ("4", "8Gi"),
    "pseudo_gt": ("2", "8Gi"),
    "evaluate": ("4", "16Gi"),
    "register": ("1", "4Gi"),
    "launcher": ("500m", "1Gi"),  # pretrain when it only submits and follows a multi-node job
    "gpu_placement": ("100m", "256Mi"),
    "cse_merge": ("4", "16Gi"),  # scores the baseline, as evaluate
    "evaluate_shard": ("4", "16Gi"),
    "evaluate_merge": ("4", "16Gi"),
}
TRAINING = ("cse_init", "pretrain", "finetune")
# Long, compute-heavy stages that a cluster runs on preemptible (spot) nodes: retried after an eviction. A retry
# runs with the same output URIs (KFP's driver provisions them once per task), and the training stages keep their
# checkpoint at the model artifact's URI on the S3 store (`run_training_stage`), so a retried cse_init, pretrain or
# finetune continues from its last checkpoint; render starts again.
PREEMPTIBLE = ("render", "cse_init", "pretrain", "finetune", "cse_train", "cse_infer", "evaluate_shard")
RETRIES = 2
UNCACHED = ("register",)


def stage_defaults(params: Params) -> dict[str, str]:
    """Each stage's (and shared) params section as the JSON text its pipeline parameter defaults to."""
    return {name: json.dumps(section(params, name)) for name in (*STAGES, *SHARED_SECTIONS)}


def _size(task: dsl.PipelineTask, cpu: str, memory: str) -> None:
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)


def _secrets_as_env(task: dsl.PipelineTask, cluster: ClusterParams) -> None:
    """MLflow and S3 credentials from the cluster's Secrets (key name = variable name), as training jobs get them."""
    for secret, keys in ((cluster.mlflow_secret, MLFLOW_SECRET_KEYS), (cluster.s3_secret, S3_SECRET_KEYS)):
        for optional in (False, True):
            chosen = {key: key for key, is_optional in keys if is_optional == optional}
            if chosen:
                kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=chosen, optional=optional)


def _stage_task(task: dsl.PipelineTask, stage: str, cluster: ClusterParams, size: tuple[str, str]) -> None:
    """What every stage pod gets: display name, project image, size, the image's non-root user, secrets, retries,
    caching."""
    task.set_display_name(DISPLAY_NAMES[stage]).set_container_image(cluster.image)
    _size(task, *size)
    kubernetes.set_security_context(task, run_as_user=USER_ID, run_as_group=USER_ID, run_as_non_root=True)
    _secrets_as_env(task, cluster)
    if stage in PREEMPTIBLE:
        task.set_retry(RETRIES, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="1800s")
    task.set_caching_options(enable_caching=stage not in UNCACHED)


def _shm(task: dsl.PipelineTask, cluster: ClusterParams) -> None:
    # Data-loader workers pass batches through /dev/shm; the container runtime's default (64 MiB) is far too small.
    kubernetes.empty_dir_mount(task, SHM_VOLUME, "/dev/shm", medium="Memory", size_limit=cluster.shm_size)


def _static_gpus(task: dsl.PipelineTask, cluster: ClusterParams) -> None:
    """`cluster.gpus_per_node` GPUs on the GPU (V100) nodes: accelerator request, node selector, toleration."""
    if not cluster.gpus_per_node:
        return
    task.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(cluster.gpus_per_node)
    pod = placement(cluster)
    for key, value in pod["nodeSelector"].items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in pod["tolerations"]:
        kubernetes.add_toleration(task, **toleration)


def _placement_task(stage: str, gpus: PipelineChannel, cluster: ClusterParams) -> dsl.PipelineTask:
    where = gpu_placement(gpus=gpus, cluster_params=json.dumps(cluster.model_dump(mode="json")))
    where.set_display_name(f"gpu_placement: {stage}").set_container_image(cluster.image)
    _size(where, *POD_SIZES["gpu_placement"])
    return where


def _gpus_on_request(
    task: dsl.PipelineTask,
    stage: str,
    gpus: PipelineChannel,
    cluster: ClusterParams,
    where: dsl.PipelineTask | None = None,
) -> None:
    """`gpus` (a run parameter) GPUs: the count goes straight into the pod; node selector and tolerations come from
    a `gpu_placement` task (`where`, else a new one), since kfp.kubernetes takes run-time values for them only as
    parameters."""
    where = where or _placement_task(stage, gpus, cluster)
    task.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, where.outputs["node_selector"])
    kubernetes.add_toleration_json(task, where.outputs["tolerations"])


def _training_task(
    task: dsl.PipelineTask, stage: str, cluster: ClusterParams, size: tuple[str, str], gpus: PipelineChannel
) -> None:
    """A stage that trains in its own pod (cse_init, finetune): the stage basics, /dev/shm, `gpus` on request."""
    _stage_task(task, stage, cluster, size)
    _shm(task, cluster)
    _gpus_on_request(task, stage, gpus, cluster)


def build_pipeline(params: Params) -> GraphComponent:
    """The pipeline for one cluster shape (`params.cluster`), its run parameters defaulting to `params`' sections."""
    cluster = params.cluster
    defaults = stage_defaults(params)
    cluster_json = json.dumps(cluster.model_dump(mode="json"))
    training_pod = (cluster.cpu_per_node, cluster.memory_per_node)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="BodyMap dense human correspondences: template, render, CSE baseline, pseudo-GT, pretrain, "
        "finetune, evaluate, register (the dvc.yaml chain). Stage parameters: one JSON section of params.yaml each.",
    )
    def bodymap_pipeline(
        template_params: str = defaults["template"],
        render_params: str = defaults["render"],
        cse_init_params: str = defaults["cse_init"],
        pseudo_gt_params: str = defaults["pseudo_gt"],
        pretrain_params: str = defaults["pretrain"],
        finetune_params: str = defaults["finetune"],
        evaluate_params: str = defaults["evaluate"],
        register_params: str = defaults["register"],
        data_params: str = defaults["data"],
        cse_init_gpus: int = 0,
        finetune_gpus: int = 0,
    ) -> Metrics:
        t = template(template_params=template_params)
        _stage_task(t, "template", cluster, POD_SIZES["template"])
        data = {"template": t.outputs["template"]}

        r = render(template=data["template"], render_params=render_params)
        _stage_task(r, "render", cluster, POD_SIZES["render"])
        data["render"] = r.outputs["render"]

        cse_sections = {"cse_init_params": cse_init_params, "data_params": data_params}
        if cluster.shards == 1:
            c = cse_init(**data, **cse_sections, evaluate_params=evaluate_params, gpus=cse_init_gpus)
            _training_task(c, "cse_init", cluster, training_pod, cse_init_gpus)
            data["cse"] = c.outputs["cse"]
        else:  # train, fan the inference out over `cluster.shards` pods, merge and score the baseline
            c = cse_train(**data, **cse_sections, evaluate_params=evaluate_params, gpus=cse_init_gpus)
            _training_task(c, "cse_train", cluster, training_pod, cse_init_gpus)
            where = _placement_task("cse_infer", cse_init_gpus, cluster)
            with dsl.ParallelFor(list(range(cluster.shards))) as shard:
                ci = cse_infer(**data, model=c.outputs["model"], shard=shard, num_shards=cluster.shards,
                               **cse_sections, gpus=cse_init_gpus)  # fmt: skip
                _stage_task(ci, "cse_infer", cluster, training_pod)
                _gpus_on_request(ci, "cse_infer", cse_init_gpus, cluster, where)
            cm = cse_merge(**data, shards=dsl.Collected(ci.outputs["cse_shard"]), **cse_sections,
                           evaluate_params=evaluate_params)  # fmt: skip
            _stage_task(cm, "cse_merge", cluster, POD_SIZES["cse_merge"])
            data["cse"] = cm.outputs["cse"]

        g = pseudo_gt(**data, pseudo_gt_params=pseudo_gt_params, data_params=data_params)
        _stage_task(g, "pseudo_gt", cluster, POD_SIZES["pseudo_gt"])

        p = pretrain(
            **data,
            pretrain_params=pretrain_params,
            evaluate_params=evaluate_params,
            cluster_params=cluster_json,
        )
        if cluster.nodes > 1:  # the pod only submits and follows the training job, which holds the GPUs
            _stage_task(p, "pretrain", cluster, POD_SIZES["launcher"])
        else:
            _stage_task(p, "pretrain", cluster, training_pod)
            _shm(p, cluster)
            _static_gpus(p, cluster)

        f = finetune(
            **data,
            pseudo_gt=g.outputs["pseudo_gt"],
            pretrained=p.outputs["model"],
            finetune_params=finetune_params,
            pseudo_gt_params=pseudo_gt_params,
            data_params=data_params,
            evaluate_params=evaluate_params,
            render_params=render_params,
            gpus=finetune_gpus,
        )
        _training_task(f, "finetune", cluster, training_pod, finetune_gpus)

        scoring = {
            "model": f.outputs["model"],
            "evaluate_params": evaluate_params,
            "data_params": data_params,
            "render_params": render_params,
        }
        if cluster.shards == 1:
            e = evaluate(**data, **scoring)
            _stage_task(e, "evaluate", cluster, POD_SIZES["evaluate"])
        else:  # BodyMap's predictions fanned out over `cluster.shards` pods, then merged and scored
            with dsl.ParallelFor(list(range(cluster.shards))) as shard:
                es = evaluate_shard(**data, **scoring, shard=shard, num_shards=cluster.shards)
                _stage_task(es, "evaluate_shard", cluster, POD_SIZES["evaluate_shard"])
            e = evaluate_merge(**data, **scoring, shards=dsl.Collected(es.outputs["predictions"]))
            _stage_task(e, "evaluate_merge", cluster, POD_SIZES["evaluate_merge"])

        reg = register(
            template=data["template"],
            cse_model=c.outputs["model"],
            model=f.outputs["model"],
            metrics=e.outputs["metrics"],
            register_params=register_params,
        )
        _stage_task(reg, "register", cluster, POD_SIZES["register"])
        return e.outputs["metrics"]

    return bodymap_pipeline
