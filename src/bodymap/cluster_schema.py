"""The `cluster` params section: the shape of a multi-node training job and Kubernetes-value validators."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from bodymap.schema import Strict

# --------------------------------------------------------------------------------------------------------- cluster
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def _k8s_name(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError("expected a Kubernetes name (lower-case letters, digits and '-', at most 63 characters)")
    return value


def _qualified_name(value: str) -> str:
    """A label key or extended resource name: `[prefix/]name`, e.g. `nvidia.com/gpu.product`."""
    prefix, _, name = value.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name) or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError("expected a Kubernetes qualified name such as nvidia.com/gpu.product")
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValueError("expected a Kubernetes label value (letters, digits, '-', '_', '.', at most 63 characters)")
    return value


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError("expected a Kubernetes quantity such as 8, 500m or 48Gi")
    return value


def _image(value: str) -> str:
    if not value or len(value) > 500 or any(c.isspace() for c in value):
        raise ValueError("expected a container image reference such as registry.example.com/bodymap:0.1.0")
    return value


K8sName = Annotated[str, AfterValidator(_k8s_name)]
QualifiedName = Annotated[str, AfterValidator(_qualified_name)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
Quantity = Annotated[str, AfterValidator(_quantity)]
Image = Annotated[str, AfterValidator(_image)]


class TolerationParams(Strict):
    """The toleration for the GPU nodes' taint: `Exists` matches any value, `Equal` needs `value`."""

    key: QualifiedName = "nvidia.com/gpu"
    operator: Literal["Exists", "Equal"] = "Exists"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    @model_validator(mode="after")
    def _value_matches_operator(self) -> TolerationParams:
        if (self.operator == "Equal") != (self.value is not None):
            raise ValueError("operator Equal needs a value and operator Exists takes none")
        return self


class ClusterParams(Strict):
    """Multi-node training on Kubernetes (`bodymap.cluster`): not a stage, read by the launcher and the KFP pipeline.

    `launcher` picks the job kind: a Kubeflow Trainer `TrainJob` on the `runtime` ClusterTrainingRuntime, or a
    `PyTorchJob` for clusters on the older Kubeflow training operator. Credentials reach the pods only as
    environment variables from the two Secrets named here (see k8s/secrets/). `shards` > 1 fans CSE inference and
    the evaluation's predictions out over that many pods of the KFP pipeline (`dsl.ParallelFor`), merged after.
    """

    launcher: Literal["trainjob", "pytorchjob"] = "trainjob"
    runtime: K8sName = "torch-distributed"
    namespace: K8sName = "bodymap"
    image: Image = "registry.example.com/bodymap:0.1.0"
    service_account: K8sName = "bodymap-trainer"
    nodes: Annotated[int, Field(ge=1, le=256)] = 1
    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    shards: Annotated[int, Field(ge=1, le=256)] = 1
    accelerator_type: QualifiedName = "nvidia.com/gpu"
    node_label_key: QualifiedName = "nvidia.com/gpu.product"
    node_label_value: LabelValue = "Tesla-V100-SXM2-16GB"
    toleration: TolerationParams = TolerationParams()
    cpu_per_node: Quantity = "8"
    memory_per_node: Quantity = "48Gi"
    shm_size: Quantity = "8Gi"
    mlflow_secret: K8sName = "bodymap-mlflow"
    s3_secret: K8sName = "bodymap-s3"
    timeout_s: Annotated[int, Field(ge=60, le=14 * 86400)] = 86400
    poll_interval_s: Annotated[float, Field(ge=1, le=600)] = 15.0
    api_timeout_s: Annotated[float, Field(ge=1, le=600)] = 30.0
