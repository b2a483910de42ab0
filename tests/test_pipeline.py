"""The KFP pipeline as compiled: the committed IR is up to date, and it asks the cluster for what it must.

kfp.local ignores every Kubernetes setting, so placement, secrets, volumes and images are checked here, on the
committed YAML (the file users upload), which the first test proves equal to a fresh compile.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bodymap.cli import COMMANDS
from bodymap.cluster.manifest import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS, placement
from bodymap.config import SHARED_SECTIONS, STAGES, load_params, validate_params
from components import STAGE_COMPONENTS, gpu_placement, pretrain
from pipelines.compile import PIPELINE_YAML, compile_pipeline, main
from pipelines.pipeline import PREEMPTIBLE, UNCACHED

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
CLUSTER = PARAMS.cluster


def dvc_upstream() -> dict[str, set[str]]:
    """stage -> the stages whose outputs (outs, metrics or plots files) it lists as deps in dvc.yaml."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    produced = {}
    for stage, spec in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for entry in spec.get(kind, []):
                produced[entry if isinstance(entry, str) else next(iter(entry))] = stage
    return {stage: {produced[d] for d in spec.get("deps", []) if d in produced} for stage, spec in stages.items()}


def load_ir(path: Path) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes platform spec) of a compiled pipeline."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def ir() -> tuple[dict, dict]:
    return load_ir(PIPELINE_YAML)


def task_stage(name: str) -> str:
    return name.replace("-", "_")


def executor(spec: dict, task: str) -> str:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    return spec["components"][component]["executorLabel"]


def test_committed_yaml_is_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(None, [], tmp_path / "pipeline.yaml")
    assert fresh.read_text() == PIPELINE_YAML.read_text(), (
        f"{PIPELINE_YAML.relative_to(ROOT)} is stale: run `make pipeline` and commit it"
    )


def test_compile_command_reports_bad_params(tmp_path, capsys):
    assert main(["--set", "cluster.nodes=0", "--out", str(tmp_path / "p.yaml")]) == 2
    assert "cluster.nodes" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_dag_is_the_dvc_chain(ir):
    spec, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    stages = {task_stage(name): task for name, task in tasks.items() if task_stage(name) in STAGES}
    assert set(stages) == set(STAGES)
    expected = dvc_upstream()
    assert set(expected) == set(STAGES)
    for stage, task in stages.items():
        upstream = {task_stage(t) for t in task.get("dependentTasks", [])} - {"gpu_placement", "gpu_placement_2"}
        assert upstream == expected[stage], stage
        assert task["taskInfo"]["name"].startswith(f"{stage}: "), "display name"


def test_every_stage_parameter_is_a_run_parameter_defaulting_to_params_yaml(ir):
    spec, _ = ir
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    sections = (*STAGES, *SHARED_SECTIONS)
    for name in sections:
        default = json.loads(inputs[f"{name}_params"]["defaultValue"])
        assert default == getattr(PARAMS, name).model_dump(mode="json")
    assert validate_params({s: json.loads(inputs[f"{s}_params"]["defaultValue"]) for s in sections}) == PARAMS
    assert inputs["cse_init_gpus"]["defaultValue"] == 0 and inputs["finetune_gpus"]["defaultValue"] == 0


def test_every_component_runs_the_project_image_without_installing_anything(ir):
    spec, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(STAGES) + 2  # + the two gpu_placement tasks
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == CLUSTER.image, name
        assert "pip install" not in " ".join(container["command"]), name
        resources = container["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert key in resources, (name, key)


def test_pretrain_runs_on_the_v100_nodes_with_secrets_and_shm(ir):
    spec, platform = ir
    label = executor(spec, "pretrain")
    resources = spec["deploymentSpec"]["executors"][label]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == CLUSTER.accelerator_type
    assert resources["accelerator"]["resourceCount"] == str(CLUSTER.gpus_per_node)
    assert resources["resourceCpuRequest"] == CLUSTER.cpu_per_node
    assert resources["resourceMemoryRequest"] == CLUSTER.memory_per_node
    k8s = platform[label]
    assert k8s["nodeSelector"]["labels"] == {CLUSTER.node_label_key: CLUSTER.node_label_value}
    toleration = {"key": CLUSTER.toleration.key, "operator": CLUSTER.toleration.operator}
    toleration["effect"] = CLUSTER.toleration.effect
    assert k8s["tolerations"] == [toleration] == placement(CLUSTER)["tolerations"]
    assert k8s["emptyDirMounts"] == [
        {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": CLUSTER.shm_size}
    ]
    assert k8s["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}


def test_every_stage_gets_mlflow_and_s3_credentials_from_secrets_only(ir):
    spec, platform = ir
    expected = {}
    for secret, keys in ((CLUSTER.mlflow_secret, MLFLOW_SECRET_KEYS), (CLUSTER.s3_secret, S3_SECRET_KEYS)):
        for key, optional in keys:
            expected[key] = (secret, optional)
    for task in spec["root"]["dag"]["tasks"]:
        if task_stage(task) not in STAGES:
            continue
        mounted = {
            pair["envVar"]: (entry["secretName"], entry["optional"])
            for entry in platform[executor(spec, task)]["secretAsEnv"]
            for pair in entry["keyToEnv"]
            if pair["envVar"] == pair["secretKey"]
        }
        assert mounted == expected, task
        assert "env" not in spec["deploymentSpec"]["executors"][executor(spec, task)]["container"], "no plain env"


def test_cse_init_and_finetune_take_gpus_when_asked(ir):
    spec, platform = ir
    tasks = spec["root"]["dag"]["tasks"]
    for stage, param in (("cse-init", "cse_init_gpus"), ("finetune", "finetune_gpus")):
        label = executor(spec, stage)
        accelerator = spec["deploymentSpec"]["executors"][label]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == CLUSTER.accelerator_type
        assert accelerator["resourceCount"] == f"{{{{$.inputs.parameters['pipelinechannel--{param}']}}}}"
        k8s = platform[label]
        producer = k8s["nodeSelector"]["nodeSelectorJson"]["taskOutputParameter"]["producerTask"]
        assert k8s["tolerations"][0]["tolerationJson"]["taskOutputParameter"]["producerTask"] == producer
        placement_task = tasks[producer]
        assert placement_task["inputs"]["parameters"]["gpus"]["componentInputParameter"] == param
        assert tasks[stage]["inputs"]["parameters"]["gpus"]["componentInputParameter"] == param
        assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"


@pytest.mark.parametrize("gpus", [0, 1])
def test_gpu_placement_component(gpus):
    cluster = json.dumps(CLUSTER.model_dump(mode="json"))
    out = gpu_placement.python_func(gpus, cluster)
    if gpus:
        assert out.node_selector == {CLUSTER.node_label_key: CLUSTER.node_label_value}
        assert out.tolerations == placement(CLUSTER)["tolerations"]
    else:
        assert (out.node_selector, out.tolerations) == ({}, [])


def test_retries_on_preemptible_stages_and_caching_policy(ir):
    spec, _ = ir
    for name, task in spec["root"]["dag"]["tasks"].items():
        stage = task_stage(name)
        assert ("retryPolicy" in task) == (stage in PREEMPTIBLE), name
        assert task["cachingOptions"].get("enableCache", False) == (stage not in UNCACHED), name
    assert UNCACHED == ("register",)


def test_component_bodies_are_thin_shells():
    """Each component body is at most 15 statements' lines (docstring apart) and imports only bodymap and stdlib."""
    for path in sorted((ROOT / "components").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not (
                isinstance(node, ast.FunctionDef) and any("component" in ast.unparse(d) for d in node.decorator_list)
            ):
                continue
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body
            lines = {line for stmt in body for line in range(stmt.lineno, stmt.end_lineno + 1)}
            assert len(lines) <= 15, f"{path.name}:{node.name} has {len(lines)} lines"
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    assert stmt.module.split(".")[0] in {"bodymap", "json", "shutil", "typing"}, stmt.module
    assert "packages_to_install" not in PIPELINE_YAML.read_text()


def test_components_pass_every_section_their_stage_reads():
    """A stage reading `params.<section>` directly must receive that section, or it would silently run on defaults."""
    for stage, comp in STAGE_COMPONENTS.items():
        module = COMMANDS[stage][0]
        source = (ROOT / "src" / (module.replace(".", "/") + ".py")).read_text()
        read = set(re.findall(r"\bparams\.([a-z_]+)\b", source)) & {*STAGES, *SHARED_SECTIONS}
        given = {name.removesuffix("_params") for name in comp.component_spec.inputs if name.endswith("_params")}
        assert read <= given, f"{stage} reads {sorted(read - given)} but its component does not take them"


def test_library_never_imports_kfp_components_or_pipelines():
    pattern = re.compile(r"^\s*(from|import)\s+(kfp|dvc|components|pipelines)\b", re.MULTILINE)
    for path in (ROOT / "src" / "bodymap").rglob("*.py"):
        assert not pattern.search(path.read_text()), path


def test_multinode_pretrain_is_a_cpu_launcher_that_submits_a_training_job(tmp_path, monkeypatch):
    """With cluster.nodes > 1 the pretrain pod holds no GPU; its body hands the stage to bodymap.cluster with the
    artifacts' URIs and then fetches the outputs, so KFP records them."""
    spec, platform = load_ir(compile_pipeline(None, ["cluster.nodes=4"], tmp_path / "multi.yaml"))
    label = executor(spec, "pretrain")
    assert "accelerator" not in spec["deploymentSpec"]["executors"][label]["container"]["resources"]
    assert "nodeSelector" not in platform[label] and "tolerations" not in platform[label]

    submitted, fetched = [], []
    import bodymap.cluster
    import bodymap.storage

    def launch(cluster, cli_args, name=None):
        submitted.append((cluster, cli_args))
        return SimpleNamespace(describe=lambda: "Complete")

    class FakeStorage:
        def exists(self, uri):
            return uri.endswith(("metrics", "curve"))

        def download_file(self, uri, path):
            fetched.append(uri)
            Path(path).write_text(json.dumps({"bodymap/test/gpsm_ap": 1.5, "bodymap/test/gpsm_ap_head": 2.0}))

        def download_dir(self, uri, path):
            fetched.append(uri)

    monkeypatch.setattr(bodymap.cluster, "launch_training", launch)
    monkeypatch.setattr(bodymap.storage, "Storage", FakeStorage)
    artifact = {}
    for name in ("template", "render", "cse", "model", "evaluation", "metrics", "curve"):
        artifact[name] = SimpleNamespace(uri=f"s3://bodymap/kfp/run/{name}", path=str(tmp_path / name), logged={})
    artifact["metrics"].log_metric = artifact["metrics"].logged.__setitem__
    cluster = PARAMS.cluster.model_copy(update={"nodes": 4})
    pretrain.python_func(
        **artifact,
        pretrain_params=json.dumps(PARAMS.pretrain.model_dump(mode="json")),
        evaluate_params=json.dumps(PARAMS.evaluate.model_dump(mode="json")),
        cluster_params=json.dumps(cluster.model_dump(mode="json")),
    )
    ((job_cluster, cli_args),) = submitted
    assert job_cluster == cluster
    assert cli_args[:3] == ["pretrain", "--params", "/dev/null"]
    for flag, name in (("--template", "template"), ("--model-dir", "model"), ("--out", "evaluation")):
        assert cli_args[cli_args.index(flag) + 1] == artifact[name].uri
    sets = dict(cli_args[i + 1].split("=", 1) for i, a in enumerate(cli_args) if a == "--set")
    assert validate_params({k: yaml.safe_load(v) for k, v in sets.items()}).pretrain == PARAMS.pretrain
    assert sorted(fetched) == sorted(artifact[n].uri for n in ("model", "evaluation", "metrics", "curve"))
    assert artifact["metrics"].logged == {"bodymap/test/gpsm_ap": 1.5}


@pytest.mark.parametrize("root", ["s3://bodymap/kfp", "minio://mlpipeline/v2/artifacts"])
def test_single_node_pretrain_keeps_its_checkpoint_on_the_store(tmp_path, monkeypatch, root):
    """On an S3 pipeline root the training pod gets the model artifact's URI as --model-dir, where the loop keeps
    `last.pt` while it trains (a KFP retry of the task gets the same URI and continues); the finished model is then
    fetched to the artifact's local path for KFP to record. Other roots train into the local path."""
    import bodymap.cli
    import bodymap.storage

    commands, fetched = [], []

    class FakeStorage:
        def download_dir(self, uri, path):
            fetched.append((uri, path))

    monkeypatch.setattr(bodymap.cli, "main", lambda argv: commands.append(argv) or 0)
    monkeypatch.setattr(bodymap.storage, "Storage", FakeStorage)
    artifact = {}
    for name in ("template", "render", "cse", "model", "evaluation", "metrics", "curve"):
        artifact[name] = SimpleNamespace(uri=f"{root}/run/{name}", path=str(tmp_path / name))
    (tmp_path / "metrics").write_text("{}")
    artifact["metrics"].log_metric = lambda key, value: None
    pretrain.python_func(
        **artifact,
        pretrain_params=json.dumps(PARAMS.pretrain.model_dump(mode="json")),
        evaluate_params=json.dumps(PARAMS.evaluate.model_dump(mode="json")),
        cluster_params=json.dumps(CLUSTER.model_dump(mode="json")),
    )
    ((argv,),) = [commands]
    model_dir = argv[argv.index("--model-dir") + 1]
    if root.startswith("s3://"):
        assert model_dir == artifact["model"].uri and fetched == [(model_dir, artifact["model"].path)]
    else:
        assert model_dir == artifact["model"].path and fetched == []
    assert argv[argv.index("--out") + 1] == artifact["evaluation"].path  # the other outputs stay local


def test_sharded_pipeline_fans_cse_inference_and_evaluation_out(tmp_path):
    """cluster.shards = 3: CSE is trained once, inferred by three tasks of a ParallelFor and merged (the baseline is
    scored there); evaluation predicts in three tasks and scores after the merge. Downstream stages read the merged
    outputs; the pipeline's output is the merged evaluation's metrics."""
    spec, platform = load_ir(compile_pipeline(None, ["cluster.shards=3"], tmp_path / "sharded.yaml"))
    tasks = spec["root"]["dag"]["tasks"]
    loops = {name: t for name, t in tasks.items() if name.startswith("for-loop")}
    assert len(loops) == 2 and all(
        json.loads(t["parameterIterator"]["items"]["raw"]) == [0, 1, 2] for t in loops.values()
    )
    inner = {name: set(spec["components"][t["componentRef"]["name"]]["dag"]["tasks"]) for name, t in loops.items()}
    assert sorted(map(sorted, inner.values())) == [["cse-infer"], ["evaluate-shard"]]
    cse_loop = next(n for n, t in inner.items() if t == {"cse-infer"})
    eval_loop = next(n for n, t in inner.items() if t == {"evaluate-shard"})
    assert "cse-init" not in tasks and "evaluate" not in tasks
    assert tasks[cse_loop]["dependentTasks"].count("cse-train") == 1
    assert tasks["cse-merge"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == cse_loop
    for stage in ("pseudo-gt", "pretrain", "finetune"):
        assert tasks[stage]["inputs"]["artifacts"]["cse"]["taskOutputArtifact"]["producerTask"] == "cse-merge", stage
    assert tasks["evaluate-merge"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == eval_loop
    assert tasks["register"]["inputs"]["artifacts"]["metrics"]["taskOutputArtifact"]["producerTask"] == "evaluate-merge"
    assert tasks["register"]["inputs"]["artifacts"]["cse_model"]["taskOutputArtifact"]["producerTask"] == "cse-train"
    (output,) = spec["root"]["dag"]["outputs"]["artifacts"]["Output"]["artifactSelectors"]
    assert output["producerSubtask"] == "evaluate-merge"
    loop_dag = spec["components"][tasks[cse_loop]["componentRef"]["name"]]["dag"]["tasks"]
    assert "retryPolicy" in loop_dag["cse-infer"]  # preemptible, like cse_init
    k8s = platform[spec["components"][loop_dag["cse-infer"]["componentRef"]["name"]]["executorLabel"]]
    assert "gpu-placement" in k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]  # cse_init_gpus
    assert {e["secretName"] for e in k8s["secretAsEnv"]} == {CLUSTER.mlflow_secret, CLUSTER.s3_secret}
