"""Training-job manifests as plain dicts: a Kubeflow Trainer `TrainJob` or a training-operator `PyTorchJob`.

Both run the same `torchrun --nnodes N --nproc_per_node G -m bodymap.cli <stage> ...` command on N pods with G GPUs
each. Rendezvous comes from the operator: the Trainer's torch-distributed runtime and the training operator (>= 1.7)
both set `PET_NODE_RANK`, `PET_MASTER_ADDR` and `PET_MASTER_PORT`, which torchrun reads for the arguments not given.

Targets:
- `TrainJob` (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer >= 2.2): scheduling, volumes and security go through
  `spec.runtimePatches` (which replaced `podTemplateOverrides`); env, image, command and resources through
  `spec.trainer`. The runtime's training container is called `node`.
- `PyTorchJob` (kubeflow.org/v1): one `Master` and N-1 `Worker` replicas; the container must be called `pytorch`.

Every function here is pure: no Kubernetes client, no I/O. `launcher.py` submits what these build.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from bodymap.config import ClusterParams
from bodymap.errors import BodymapError


@dataclass(frozen=True)
class JobApi:
    """Where a job kind lives in the Kubernetes API (the arguments of `CustomObjectsApi` calls)."""

    kind: str
    group: str
    version: str
    plural: str
    pod_label: str  # label every pod of the job carries, with the job name as its value

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


TRAINJOB = JobApi("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "jobset.sigs.k8s.io/jobset-name")
PYTORCHJOB = JobApi("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", "training.kubeflow.org/job-name")
JOB_APIS = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}

# Secret keys are the environment variable names. (name, optional): optional keys may be absent from the Secret.
MLFLOW_SECRET_KEYS: tuple[tuple[str, bool], ...] = (
    ("MLFLOW_TRACKING_URI", False),
    ("MLFLOW_TRACKING_USERNAME", True),
    ("MLFLOW_TRACKING_PASSWORD", True),
)
S3_SECRET_KEYS: tuple[tuple[str, bool], ...] = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_ENDPOINT_URL", True),
    ("MLFLOW_S3_ENDPOINT_URL", True),
)

SHM_VOLUME = "dshm"
TRAINER_MANAGER = "bodymap.cluster/launcher"  # owner of our entry in a TrainJob's runtimePatches
USER_ID = 1000  # the image's non-root user (Dockerfile)
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def job_name(stage: str, suffix: str | None = None) -> str:
    """`bodymap-<stage>-<suffix>`: an RFC 1035 label (TrainJob names must be one), at most 63 characters.

    Args:
        stage: the stage that trains, e.g. "pretrain"; underscores become dashes.
        suffix: what makes the name unique (e.g. a KFP run id); 8 random hex digits when None.
    """
    suffix = suffix if suffix is not None else secrets.token_hex(4)
    raw = f"bodymap-{stage}-{suffix}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63].rstrip("-")
    if not _NAME.match(name):
        raise BodymapError(f"cannot make a Kubernetes job name from stage {stage!r} and suffix {suffix!r}")
    return name


def torchrun_command(nodes: int, procs_per_node: int, cli_args: list[str]) -> list[str]:
    """The container command: torchrun over `python -m bodymap.cli <cli_args>`, e.g. ["pretrain", "--out", "..."]."""
    if not cli_args:
        raise BodymapError("the training command needs the bodymap CLI arguments, e.g. ['pretrain', ...]")
    return ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={procs_per_node}", "-m", "bodymap.cli", *cli_args]


def secret_env(cluster: ClusterParams) -> list[dict[str, Any]]:
    """Env vars read from the MLflow and S3 Secrets (key name = variable name); nothing secret is in the manifest."""
    env = []
    for secret, keys in ((cluster.mlflow_secret, MLFLOW_SECRET_KEYS), (cluster.s3_secret, S3_SECRET_KEYS)):
        for key, optional in keys:
            ref: dict[str, Any] = {"name": secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(cluster: ClusterParams) -> dict[str, Any]:
    """Per-node requests equal to limits (Guaranteed QoS; GPUs, an extended resource, need them equal anyway).

    The CPU limit is explicit so the namespace LimitRange's small default never throttles the data loaders.
    """
    requests: dict[str, Any] = {"cpu": cluster.cpu_per_node, "memory": cluster.memory_per_node}
    limits: dict[str, Any] = dict(requests)
    if cluster.gpus_per_node:
        requests[cluster.accelerator_type] = cluster.gpus_per_node
        limits[cluster.accelerator_type] = cluster.gpus_per_node
    return {"requests": requests, "limits": limits}


def _placement(cluster: ClusterParams) -> dict[str, Any]:
    """Node selector and toleration for the GPU (V100) nodes; nothing for CPU-only jobs."""
    if not cluster.gpus_per_node:
        return {}
    toleration = {"key": cluster.toleration.key, "operator": cluster.toleration.operator}
    if cluster.toleration.value is not None:
        toleration["value"] = cluster.toleration.value
    toleration["effect"] = cluster.toleration.effect
    return {"nodeSelector": {cluster.node_label_key: cluster.node_label_value}, "tolerations": [toleration]}


def placement(cluster: ClusterParams) -> dict[str, Any]:
    """`nodeSelector` and `tolerations` of a pod with `cluster.gpus_per_node` GPUs ({} without any): the KFP pipeline
    places its GPU stages by the same rule as the training jobs."""
    return _placement(cluster)


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _shm_volume(cluster: ClusterParams) -> dict[str, Any]:
    # Data-loader workers pass batches through /dev/shm; the container runtime's default (64 MiB) is far too small.
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": cluster.shm_size}}


_SHM_MOUNT = {"name": SHM_VOLUME, "mountPath": "/dev/shm"}


def _labels(stage: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "bodymap", "app.kubernetes.io/component": "training", "bodymap/stage": stage}


def build_trainjob(cluster: ClusterParams, name: str, stage: str, cli_args: list[str]) -> dict[str, Any]:
    """A Kubeflow Trainer TrainJob on the `cluster.runtime` ClusterTrainingRuntime (torch-distributed)."""
    procs = max(cluster.gpus_per_node, 1)
    pod_patch: dict[str, Any] = {
        "serviceAccountName": cluster.service_account,
        "securityContext": _pod_security(),
        **_placement(cluster),
        "volumes": [_shm_volume(cluster)],
        "containers": [{"name": "node", "volumeMounts": [_SHM_MOUNT], "securityContext": _container_security()}],
    }
    return {
        "apiVersion": TRAINJOB.api_version,
        "kind": TRAINJOB.kind,
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": _labels(stage)},
        "spec": {
            "runtimeRef": {"name": cluster.runtime, "apiGroup": TRAINJOB.group, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": cluster.image,
                "command": torchrun_command(cluster.nodes, procs, cli_args),
                "env": secret_env(cluster),
                "numNodes": cluster.nodes,
                "numProcPerNode": procs,
                "resourcesPerNode": _resources(cluster),
            },
            "runtimePatches": [
                {
                    "manager": TRAINER_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {"name": "node", "template": {"spec": {"template": {"spec": pod_patch}}}}
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def build_pytorchjob(cluster: ClusterParams, name: str, stage: str, cli_args: list[str]) -> dict[str, Any]:
    """A training-operator PyTorchJob: one Master and `nodes - 1` Workers with identical pods."""
    procs = max(cluster.gpus_per_node, 1)
    container = {
        "name": "pytorch",
        "image": cluster.image,
        "command": torchrun_command(cluster.nodes, procs, cli_args),
        "env": secret_env(cluster),
        "resources": _resources(cluster),
        "volumeMounts": [_SHM_MOUNT],
        "securityContext": _container_security(),
    }
    pod = {
        "metadata": {"labels": _labels(stage)},
        "spec": {
            "serviceAccountName": cluster.service_account,
            "securityContext": _pod_security(),
            **_placement(cluster),
            "containers": [container],
            "volumes": [_shm_volume(cluster)],
        },
    }
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod}}
    if cluster.nodes > 1:
        replicas["Worker"] = {"replicas": cluster.nodes - 1, "restartPolicy": "OnFailure", "template": pod}
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": _labels(stage)},
        "spec": {
            "nprocPerNode": str(procs),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3, "activeDeadlineSeconds": cluster.timeout_s},
            "pytorchReplicaSpecs": replicas,
        },
    }


def build_manifest(cluster: ClusterParams, name: str, cli_args: list[str]) -> dict[str, Any]:
    """The job `cluster.launcher` asks for, running `python -m bodymap.cli <cli_args>` under torchrun.

    Args:
        cluster: the `cluster` params section.
        name: the job name (see `job_name`).
        cli_args: the bodymap CLI arguments, stage first, e.g. ["pretrain", "--out", "s3://bucket/run/pretrain"].
    """
    if not _NAME.match(name) or len(name) > 63:
        raise BodymapError(f"job name {name!r}: expected an RFC 1035 label (a-z, 0-9, '-'; at most 63 characters)")
    if not cli_args:
        raise BodymapError("the training command needs the bodymap CLI arguments, e.g. ['pretrain', ...]")
    builder = build_trainjob if cluster.launcher == "trainjob" else build_pytorchjob
    return builder(cluster, name, cli_args[0], list(cli_args))


def job_api(manifest: dict[str, Any]) -> JobApi:
    """The API coordinates of a manifest built here."""
    for api in JOB_APIS.values():
        if manifest.get("kind") == api.kind and manifest.get("apiVersion") == api.api_version:
            return api
    raise BodymapError(f"not a training job manifest: kind {manifest.get('kind')!r}")
