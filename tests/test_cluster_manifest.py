"""Training-job manifests: the TrainJob / PyTorchJob dicts the launcher submits, checked field by field.

The CRDs cannot be schema-validated offline, so their structure is asserted here, and the pod they describe is
validated against the Kubernetes schema as a core/v1 PodTemplate.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from bodymap.cli import main as cli_main
from bodymap.cluster import build_manifest, job_name, torchrun_command
from bodymap.cluster.manifest import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS
from bodymap.config import ClusterParams, TolerationParams
from bodymap.errors import BodymapError

K8S_VERSION = "1.31"
ARGS = ["pretrain", "--out", "s3://bodymap/runs/1/pretrain"]
V100 = ClusterParams(
    nodes=4,
    gpus_per_node=8,
    image="registry.example.com/bodymap:1.2.3",
    node_label_key="cloud.google.com/gke-accelerator",
    node_label_value="nvidia-tesla-v100",
    toleration=TolerationParams(key="dedicated", operator="Equal", value="gpu", effect="NoSchedule"),
    shm_size="16Gi",
)


def _validate_pod(pod: dict) -> None:
    """Schema-check a pod template (metadata + spec) as a core/v1 PodTemplate."""
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": pod}
    kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)


def _trainjob_pod(job: dict) -> dict:
    """The pod a TrainJob asks for: the runtime's `node` container with spec.trainer and our runtime patch merged."""
    trainer = job["spec"]["trainer"]
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    spec = copy.deepcopy(replicated["template"]["spec"]["template"]["spec"])
    (container,) = spec["containers"]
    assert container["name"] == "node"
    container.update(
        image=trainer["image"], command=trainer["command"], env=trainer["env"], resources=trainer["resourcesPerNode"]
    )
    return {"spec": spec}


def _env_names(env: list[dict]) -> list[str]:
    return [e["name"] for e in env]


def test_trainjob_runs_torchrun_on_n_nodes_by_g_gpus():
    job = build_manifest(V100, "bodymap-pretrain-abc", ARGS)
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert job["kind"] == "TrainJob"
    assert job["metadata"] == {
        "name": "bodymap-pretrain-abc",
        "namespace": "bodymap",
        "labels": {
            "app.kubernetes.io/name": "bodymap",
            "app.kubernetes.io/component": "training",
            "bodymap/stage": "pretrain",
        },
    }
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    trainer = spec["trainer"]
    assert trainer["image"] == "registry.example.com/bodymap:1.2.3"
    assert trainer["numNodes"] == 4
    assert trainer["numProcPerNode"] == 8
    assert trainer["command"] == ["torchrun", "--nnodes=4", "--nproc_per_node=8", "-m", "bodymap.cli", *ARGS]
    resources = trainer["resourcesPerNode"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 8
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "8"
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "48Gi"
    # The torch runtime owns the rendezvous variables; the Trainer webhook rejects a TrainJob that sets them.
    assert not any(name.startswith("PET_") for name in _env_names(trainer["env"]))


def test_trainjob_places_pods_on_v100_nodes_with_shm_and_non_root():
    pod = _trainjob_pod(build_manifest(V100, "bodymap-pretrain-abc", ARGS))["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-v100"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["serviceAccountName"] == "bodymap-trainer"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_credentials_come_only_from_secrets(launcher):
    job = build_manifest(V100.model_copy(update={"launcher": launcher}), "bodymap-pretrain-abc", ARGS)
    env = (
        job["spec"]["trainer"]["env"]
        if launcher == "trainjob"
        else job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]
    )
    expected = [k for k, _ in MLFLOW_SECRET_KEYS] + [k for k, _ in S3_SECRET_KEYS]
    assert _env_names(env) == expected
    for var in env:
        assert "value" not in var, f"{var['name']} has a literal value"
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] == var["name"]
        assert ref["name"] == ("bodymap-mlflow" if var["name"].startswith("MLFLOW_TRACKING") else "bodymap-s3")
    required = {v["name"] for v in env if not v["valueFrom"]["secretKeyRef"].get("optional")}
    assert required == {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_pytorchjob_has_one_master_and_n_minus_one_workers():
    job = build_manifest(V100.model_copy(update={"launcher": "pytorchjob"}), "bodymap-pretrain-abc", ARGS)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8"  # a string in the v1 API
    assert spec["runPolicy"]["activeDeadlineSeconds"] == V100.timeout_s
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == 3
    for replica in replicas.values():
        pod = replica["template"]
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator finds the container by this name
        assert container["command"] == ["torchrun", "--nnodes=4", "--nproc_per_node=8", "-m", "bodymap.cli", *ARGS]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-v100"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        _validate_pod(pod)


def test_single_node_pytorchjob_has_no_workers():
    job = build_manifest(ClusterParams(launcher="pytorchjob"), "bodymap-finetune-x", ["finetune"])
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_cpu_only_job_asks_for_no_gpu_and_no_gpu_nodes(launcher):
    cluster = ClusterParams(launcher=launcher, nodes=2, gpus_per_node=0)
    job = build_manifest(cluster, "bodymap-pretrain-cpu", ARGS)
    pod = _trainjob_pod(job) if launcher == "trainjob" else job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    resources = pod["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources["requests"] and "nvidia.com/gpu" not in resources["limits"]
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]
    assert "--nproc_per_node=1" in pod["spec"]["containers"][0]["command"]


def test_trainjob_pod_is_a_valid_kubernetes_pod():
    _validate_pod(_trainjob_pod(build_manifest(V100, "bodymap-pretrain-abc", ARGS)))
    _validate_pod(_trainjob_pod(build_manifest(ClusterParams(), "bodymap-pretrain-abc", ARGS)))


def test_job_names_are_rfc1035_labels():
    assert job_name("pretrain", "run42") == "bodymap-pretrain-run42"
    assert job_name("cse_init", "Run_42") == "bodymap-cse-init-run-42"
    long = job_name("pretrain", "x" * 100)
    assert len(long) <= 63 and not long.endswith("-")
    random_a, random_b = job_name("pretrain"), job_name("pretrain")
    assert random_a != random_b and random_a.startswith("bodymap-pretrain-")


def test_bad_inputs_are_errors_for_people():
    with pytest.raises(BodymapError, match="RFC 1035"):
        build_manifest(ClusterParams(), "Bad_Name", ARGS)
    with pytest.raises(BodymapError, match="bodymap CLI arguments"):
        build_manifest(ClusterParams(), "bodymap-x", [])
    with pytest.raises(BodymapError, match="bodymap CLI arguments"):
        torchrun_command(1, 1, [])


def test_cli_prints_the_manifest(capsys, tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")  # the built-in defaults, whatever ./params.yaml holds
    overrides = [
        "--params",
        str(tmp_path / "params.yaml"),
        "--set",
        "cluster.nodes=3",
        "--set",
        "cluster.launcher=pytorchjob",
    ]
    code = cli_main(["cluster", "manifest", *overrides, "--name", "bodymap-t", "--", "finetune", "--mode", "dense"])
    assert code == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["kind"] == "PyTorchJob"
    assert job["metadata"]["name"] == "bodymap-t"
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[-3:] == ["finetune", "--mode", "dense"]
