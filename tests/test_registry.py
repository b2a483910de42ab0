"""The promotion gate on a real MLflow SQLite registry, loading by alias, tracking details, and the DVC stage graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bodymap.config import SHARED_SECTIONS, STAGES
from bodymap.registry.promote import decide, metric_tags, metrics_from_tags, promote_version
from bodymap.tracking import Tracker, dvc_hashes, with_retry

ROOT = Path(__file__).resolve().parents[1]
GATE = {"primary": "bodymap/coco/gpsm_ap", "margin": 0.5, "guards": {"bodymap/test/gpsm_ap": 2.0}}


def test_decide_rules():
    first = decide({"p": 10.0}, None, "p", 0.0, {})
    assert first.promote and "first version" in first.reason
    better = decide({"p": 12.0, "g": 50.0}, {"p": 10.0, "g": 51.0}, "p", 1.0, {"g": 2.0})
    assert better.promote
    within_margin = decide({"p": 10.5}, {"p": 10.0}, "p", 1.0, {})
    assert not within_margin.promote and "does not beat" in within_margin.reason
    guard = decide({"p": 20.0, "g": 40.0}, {"p": 10.0, "g": 50.0}, "p", 0.0, {"g": 2.0})
    assert not guard.promote and "guard g" in guard.reason
    missing = decide({"p": None}, {"p": 1.0}, "p", 0.0, {})
    assert not missing.promote
    assert metrics_from_tags(metric_tags({"a/b": 1.5, "c": None})) == {"a/b": 1.5, "c": None}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A real MLflow tracking store and registry on SQLite in tmp_path."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("BODYMAP_TRACKING", raising=False)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _log_version(client, name: str, scale: float) -> tuple[str, torch.nn.Module, np.ndarray]:
    import mlflow

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(scale)
    example = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    tracker = Tracker(experiment="test")
    with tracker.run("register", params={"scale": scale}):
        info = mlflow.pytorch.log_model(
            model, name="model", input_example=example, serialization_format="pickle",
            registered_model_name=name, pip_requirements=["torch"],
        )  # fmt: skip
    return str(info.registered_model_version), model, example


def test_first_version_becomes_champion_better_moves_it_worse_does_not(registry):
    v1, _, _ = _log_version(registry, "gate", 1.0)
    d1 = promote_version(registry, "gate", v1, {"bodymap/coco/gpsm_ap": 10.0, "bodymap/test/gpsm_ap": 30.0}, GATE)
    assert d1.promote and str(registry.get_model_version_by_alias("gate", "champion").version) == v1

    v2, _, _ = _log_version(registry, "gate", 2.0)
    d2 = promote_version(registry, "gate", v2, {"bodymap/coco/gpsm_ap": 9.0, "bodymap/test/gpsm_ap": 35.0}, GATE)
    assert not d2.promote
    assert str(registry.get_model_version_by_alias("gate", "champion").version) == v1
    assert str(registry.get_model_version_by_alias("gate", "challenger").version) == v2
    tags = registry.get_model_version("gate", v2).tags
    assert tags["decision"] == "rejected" and "does not beat" in tags["decision.reason"]
    assert tags["compared_with_version"] == v1 and tags["metric.bodymap/coco/gpsm_ap"] == "9"

    v3, _, _ = _log_version(registry, "gate", 3.0)
    d3 = promote_version(registry, "gate", v3, {"bodymap/coco/gpsm_ap": 12.0, "bodymap/test/gpsm_ap": 29.0}, GATE)
    assert d3.promote and str(registry.get_model_version_by_alias("gate", "champion").version) == v3
    assert registry.get_model_version("gate", v3).tags["decision"] == "promoted"

    # A better primary metric but a guard that drops too far: no promotion.
    v4, _, _ = _log_version(registry, "gate", 4.0)
    d4 = promote_version(registry, "gate", v4, {"bodymap/coco/gpsm_ap": 20.0, "bodymap/test/gpsm_ap": 20.0}, GATE)
    assert not d4.promote and "guard" in d4.reason
    assert str(registry.get_model_version_by_alias("gate", "champion").version) == v3


def test_loading_by_alias_predicts_like_the_logged_model(registry):
    import mlflow

    version, model, example = _log_version(registry, "alias", 1.5)
    promote_version(registry, "alias", version, {"bodymap/coco/gpsm_ap": 1.0}, GATE)
    loaded = mlflow.pytorch.load_model("models:/alias@champion")
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(example)), model(torch.from_numpy(example)))


def test_stage_runs_nest_under_the_pipeline_run_and_carry_tags(registry, tmp_path, monkeypatch):
    from bodymap.tracking import end_pipeline_run, start_pipeline_run

    parent = start_pipeline_run("nest")
    monkeypatch.setenv("BODYMAP_PIPELINE_RUN_ID", parent)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {"schema": "2.0", "stages": {"template": {"outs": [{"path": "data/template", "md5": "abc.dir"}]}}}
        )
    )
    tracker = Tracker(experiment="nest")
    with tracker.run("render", params={"render": {"image_size": 64}}, inputs=[Path("data/template")]):
        tracker.log_metrics({"render/images": 3.0})
        run_id = tracker.run_id
    end_pipeline_run(parent)
    run = registry.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["dvc.data/template"] == "abc.dir" and run.data.tags["stage"] == "render"
    assert "git_commit" in run.data.tags and run.data.params["render.image_size"] == "64"
    assert run.data.metrics["render.images"] == 3.0
    assert registry.get_run(parent).info.status == "FINISHED"


def test_retry_absorbs_a_locked_database():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert with_retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        with_retry(lambda: (_ for _ in ()).throw(ValueError("other")))


def test_two_processes_write_the_sqlite_store_at_once(tmp_path):
    """Two stage-like processes logging concurrently both finish (SQLite's lock is retried, not fatal)."""
    import subprocess
    import sys

    script = (
        "from bodymap.tracking import Tracker\n"
        "t = Tracker(experiment='concurrent')\n"
        "with t.run('s', params={'a': 1}):\n"
        "    for i in range(30):\n"
        "        t.log_metrics({'m': float(i)}, step=i)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("BODYMAP_TRACKING", None)
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-2000:]


def test_dvc_stage_graph_is_the_design_order():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STAGES)
    outputs = {}
    for name, stage in stages.items():
        for out in stage.get("outs", []) + [
            next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])
        ]:
            outputs[out if isinstance(out, str) else next(iter(out))] = name
    # Every data dependency is produced by an earlier stage, so `dvc repro` runs them in the README's stage order.
    for index, (name, stage) in enumerate(stages.items()):
        for dep in stage.get("deps", []):
            producer = next((s for path, s in outputs.items() if dep == path or dep.startswith(path + "/")), None)
            if producer is not None:
                assert STAGES.index(producer) < index, f"{name} depends on {dep} from {producer}"
        assert stage["cmd"].split()[:2] == ["bodymap", name]
        assert all(p == name or p.split(".")[0] in (*STAGES, *SHARED_SECTIONS) for p in stage.get("params", []))
    assert dvc_hashes([Path("nothing")], ROOT / "no-such.lock") == {}


# Modules that move bytes, parse arguments, log or validate, and never change a stage's numbers: a change to them
# need not re-run the pipeline. Everything else a stage imports must be in its DVC deps.
PLUMBING = {
    "cli",
    "cli_options",
    "cluster_schema",
    "config",
    "schema",
    "errors",
    "io",
    "log",
    "remote",
    "storage",
    "tracking",
}


def _bodymap_imports(module: str) -> set[str]:
    """Top-level bodymap modules/packages `module` imports, followed transitively (static, from the source)."""
    import ast

    def source(name: str) -> Path | None:
        path = ROOT / "src" / Path(*name.split("."))
        for candidate in (path / "__init__.py", path.with_suffix(".py")):
            if candidate.exists():
                return candidate
        return None

    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = source(name) if name not in seen else None
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # parent packages' __init__
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bodymap"):
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("bodymap")]
    return {name.split(".")[1] for name in seen if name.count(".") >= 1}


def test_dvc_deps_cover_the_code_each_stage_imports():
    from bodymap.cli import COMMANDS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = {Path(d).stem for d in stage["deps"] if d.startswith("src/bodymap/")}
        needed = _bodymap_imports(COMMANDS[name][0]) - PLUMBING
        assert needed <= deps, f"dvc.yaml: stage {name}: deps miss src/bodymap/{sorted(needed - deps)}"
