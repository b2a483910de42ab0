"""Instant tests: the real stage commands, in pipeline order, on the tiny render with a few training steps.

Each stage runs as a subprocess exactly as DVC and the KFP components run it, with a throwaway MLflow store.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TEST_RENDER_PARAMS

from bodymap.config import default_params_dict

pytestmark = pytest.mark.slow

TINY = {
    "render": {"image_size": TEST_RENDER_PARAMS["image_size"]},  # what the prepared render was made at, as in a run
    "cse_init": {
        "train_crop": 64,
        "train": {"steps": 24, "batch_size": 4, "log_every": 4, "warmup_steps": 2, "lr": 0.003},
    },
    # A CSE model trained for 24 steps barely separates people from the background: trust the flow check alone.
    "pseudo_gt": {"flow": {"min_foreground": 0.0}},
    "pretrain": {"train": {"steps": 6, "batch_size": 4, "log_every": 2, "warmup_steps": 1, "checkpoint_every": 3}},
    "finetune": {"train": {"steps": 4, "batch_size": 2, "log_every": 2, "warmup_steps": 1}},
    "evaluate": {"visualisations": 1},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return out


class Work:
    """Paths, params and environment of one test pipeline run."""

    def __init__(self, root: Path, template: Path, render: Path) -> None:
        self.root, self.template, self.render = root, template, render
        self.params = root / "params.yaml"
        self.params.write_text(yaml.safe_dump(_merge(default_params_dict(), TINY), sort_keys=False))
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "OMP_NUM_THREADS": "2",
        }

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "bodymap.cli", *args, "--params", str(self.params), "-q"]
        result = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args[:1])} failed:\n{result.stderr[-4000:]}"
        return result

    def metrics(self, name: str) -> dict:
        return json.loads((self.root / "metrics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory, template_dir: Path, rendered: Path) -> Work:
    root = tmp_path_factory.mktemp("pipeline")
    (root / "metrics").mkdir()
    return Work(root, template_dir, rendered)


@pytest.fixture(scope="module")
def cse(work: Work) -> Path:
    work.run(
        "cse_init", "--template", str(work.template), "--render", str(work.render), "--model-dir", "models/cse",
        "--out", "cse", "--metrics", "metrics/cse_init.json", "--plots", "plots/cse_loss.csv",
    )  # fmt: skip
    return work.root / "cse"


def test_cse_init_trains_infers_every_set_and_scores_the_baseline(work: Work, cse: Path) -> None:
    with open(work.root / "plots" / "cse_loss.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 6 and losses[-1] < losses[0]
    for name in ("train", "val", "test", "video", "coco_train", "coco_val", "coco_test"):
        index = json.loads((cse / name / "predictions.json").read_text())
        assert index["kind"] == "dense" and index["images"]
        with np.load(cse / name / index["images"][0]["file"]) as data:
            assert data["vertex"].dtype == np.int32 and data["embedding"].shape[0] == 16
    metrics = work.metrics("cse_init")
    for key in ("cse/val/gpsm_ap", "cse/test/cm_10", "constant/test/cm_10", "random/val/window_10px"):
        assert key in metrics
    assert "cse/coco_val/gps_ap" in metrics and "cse/test/window_scaled_10px" in metrics


@pytest.fixture(scope="module")
def pseudo_gt(work: Work, cse: Path) -> Path:
    work.run(
        "pseudo_gt", "--template", str(work.template), "--render", str(work.render), "--cse", "cse",
        "--out", "pseudo_gt", "--metrics", "metrics/pseudo_gt.json",
    )  # fmt: skip
    return work.root / "pseudo_gt"


def test_pseudo_gt_writes_dense_sparse_and_flow_labels_and_scores_them(work: Work, pseudo_gt: Path) -> None:
    dense = sorted((pseudo_gt / "dense").glob("*.npz"))
    assert dense and len(dense) == len(list((pseudo_gt / "sparse").glob("*.npz")))
    with np.load(dense[0]) as d, np.load(pseudo_gt / "sparse" / dense[0].name) as s:
        labelled = s["vertex"] >= 0
        assert labelled.any() and np.array_equal(d["vertex"][labelled], s["vertex"][labelled])
        assert np.all(d["vertex"][d["mask"] > 0] >= 0)
    metrics = work.metrics("pseudo_gt")
    for key in ("pseudo_gt/cm_10", "cse/cm_10", "sparse/cm_10", "flow/points_added", "flow/cm_5"):
        assert key in metrics
    assert metrics["flow/points_added"] > 0


@pytest.fixture(scope="module")
def pretrained(work: Work, cse: Path) -> Path:
    work.run(
        "pretrain", "--template", str(work.template), "--render", str(work.render), "--cse", "cse",
        "--model-dir", "models/pretrain", "--out", "pretrain", "--metrics", "metrics/pretrain.json",
        "--plots", "plots/pretrain_loss.csv",
    )  # fmt: skip
    return work.root / "models" / "pretrain" / "last.pt"


def test_pretrain_command_trains_checkpoints_and_scores_the_test_split(work: Work, pretrained: Path) -> None:
    import torch

    state = torch.load(pretrained, weights_only=False)
    assert state["step"] == 6 and state["model_name"] == "bodymap_vit" and "pretrain" in state["params"]
    metrics = work.metrics("pretrain")
    assert {"bodymap/val/gpsm_ap", "bodymap/test/gpsm_ap", "bodymap/test/window_10px", "bodymap/val/cm_10"} <= set(
        metrics
    )
    with open(work.root / "plots" / "pretrain_loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert {"classification", "silhouette", "geodesic", "consistency"} <= set(rows[0])


def test_pretrain_under_torchrun_on_two_processes_is_one_mlflow_run(work: Work, cse: Path, tmp_path: Path) -> None:
    """torchrun-compatible DDP on CPU (gloo): the real command on two ranks trains, writes one checkpoint, and opens
    one MLflow run (rank 0's) with the loop's metrics; before, every rank opened its own."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "bodymap.cli", "pretrain",
        "--template", str(work.template), "--render", str(work.render), "--cse", "cse",
        "--model-dir", "models/ddp", "--out", "ddp", "--params", str(work.params), "-q",
        "--set", "pretrain.train.steps=2", "--set", "pretrain.train.batch_size=2", "--set", "pretrain.train.threads=1",
    ]  # fmt: skip
    store = f"sqlite:///{tmp_path / 'ddp-mlflow.db'}"
    env = {**work.env, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": store}
    result = subprocess.run(cmd, cwd=work.root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    import mlflow
    import torch

    assert torch.load(work.root / "models/ddp/last.pt", weights_only=False)["step"] == 2
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [run.info.run_name for run in runs] == ["pretrain"]
    assert runs[0].info.status == "FINISHED" and "train.loss" in runs[0].data.metrics


@pytest.fixture(scope="module")
def finetuned(work: Work, pseudo_gt: Path, pretrained: Path) -> Path:
    work.run(
        "finetune", "--template", str(work.template), "--render", str(work.render), "--cse", "cse",
        "--pseudo-gt", "pseudo_gt", "--pretrained", str(pretrained), "--model-dir", "models/finetune",
        "--out", "finetune", "--metrics", "metrics/finetune.json", "--plots", "plots/finetune_loss.csv",
    )  # fmt: skip
    return work.root / "models" / "finetune" / "last.pt"


def test_finetune_dense_mode_trains_on_pseudo_gt_and_scores_held_out_coco(work: Work, finetuned: Path) -> None:
    import torch

    state = torch.load(finetuned, weights_only=False)
    assert state["step"] == 4 and state["params"]["finetune"]["mode"] == "dense"
    metrics = work.metrics("finetune")
    keys = {"bodymap/coco_val/gpsm_ap", "bodymap/coco_val_dense/window_10px", "bodymap/val/cm_10"}
    assert keys <= set(metrics)
    assert {k.replace("bodymap/", "pretrained/") for k in keys} <= set(metrics)  # the weights it started from
    # the same weights on the same set score what the pretrain stage measured
    assert metrics["pretrained/val/cm_10"] == pytest.approx(work.metrics("pretrain")["bodymap/val/cm_10"])
    assert metrics["bodymap/coco_val/window_10px"] is None  # sparse points: no window figure
    assert metrics["examples"] > 0


def test_finetune_mode_none_keeps_the_weights_and_reports_them_once_under_both_names(
    work: Work, pseudo_gt: Path, pretrained: Path
) -> None:
    work.run(
        "finetune", "--template", str(work.template), "--render", str(work.render), "--cse", "cse",
        "--pseudo-gt", "pseudo_gt", "--pretrained", str(pretrained), "--model-dir", "models/finetune-none",
        "--out", "finetune-none", "--metrics", "metrics/finetune-none.json", "--set", "finetune.mode=none",
    )  # fmt: skip
    metrics = json.loads((work.root / "metrics" / "finetune-none.json").read_text())
    assert metrics["examples"] == 0 and metrics["bodymap/val/cm_10"] == metrics["pretrained/val/cm_10"]
    assert metrics["pretrained/val/cm_10"] == pytest.approx(work.metrics("pretrain")["bodymap/val/cm_10"])
    assert not (work.root / "finetune-none" / "pretrained").exists()  # not predicted twice


@pytest.fixture(scope="module")
def evaluated(work: Work, finetuned: Path) -> dict:
    work.run(
        "evaluate", "--template", str(work.template), "--render", str(work.render), "--cse", "cse",
        "--model", str(finetuned), "--out", "evaluation", "--metrics", "metrics/evaluate.json",
        "--plots", "plots/window_accuracy.csv",
    )  # fmt: skip
    return work.metrics("evaluate")


def test_evaluate_reports_bodymap_and_cse_beside_the_floors(work: Work, evaluated: dict) -> None:
    keys = ("val/gpsm_ap", "test/gtbox_gpsm_ap", "coco_test/gps_ap", "coco_val_dense/cm_10", "video/temporal_k1")
    for model in ("bodymap", "cse", "constant", "random"):
        for key in (*keys, "test/window_5px", "test/window_scaled_10px"):
            assert f"{model}/{key}" in evaluated, f"{model}/{key}"
    # The floors keep BodyMap's silhouettes: the same mask IoU AP; and they score near nothing elsewhere.
    for floor in ("constant", "random"):
        assert evaluated[f"{floor}/test/iou_ap"] == evaluated["bodymap/test/iou_ap"]
        for key in ("test/gps_ap", "test/cm_5", "test/window_scaled_10px", "video/temporal_k12"):
            value = evaluated[f"{floor}/{key}"]
            assert value is None or value < 5.0, (floor, key, value)
    report = (work.root / "evaluation" / "report" / "report.md").read_text()
    for row in ("| test | bodymap |", "| test | cse |", "| test | constant |", "| val | random |", "| video | cse |"):
        assert row in report
    assert "Temporal consistency" in report
    curve = (work.root / "plots" / "window_accuracy.csv").read_text().splitlines()
    assert curve[0].startswith("window_px,bodymap/val,cse/val,constant/val,random/val") and len(curve) == 4


def test_register_promotes_the_first_version_and_loads_by_alias(work: Work, evaluated: dict) -> None:
    work.run(
        "register", "--model-dir", "models/finetune", "--cse-model", "models/cse/last.pt",
        "--template", str(work.template), "--metrics", "metrics/evaluate.json", "--out", "metrics/register.json",
    )  # fmt: skip
    record = work.metrics("register")
    assert record["version"] == "1" and record["promoted"] and "first version" in record["reason"]
    # `bodymap predict` runs straight from the registry alias, on a render and on a real photograph of a person
    # (Grace Hopper, a public-domain portrait that ships with matplotlib), at the photo's own size.
    import matplotlib

    render = sorted((work.render / "test" / "images").glob("*.png"))[0]
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    work.run("predict", str(render), str(photo), "--model", "models:/bodymap@champion", "--out", "predicted")
    with np.load(work.template / "template.npz") as data:
        num_vertices = len(data["vertices"])
    for path, shape in ((render, (96, 96)), (photo, (600, 512))):
        with np.load(work.root / "predicted" / f"{path.stem}_vertex.npz") as data:
            assert data["vertex"].shape == shape
            assert data["vertex"].min() >= -1 and data["vertex"].max() < num_vertices
        assert (work.root / "predicted" / f"{path.stem}_overlay.png").exists()
        assert (work.root / "predicted" / f"{path.stem}_correspondence.png").exists()


def test_evaluate_in_shards_merges_into_the_unsharded_predictions(work: Work, evaluated: dict) -> None:
    """The two shards of `bodymap evaluate --shard i --num-shards 2` (its `predict_report_sets`, in this process),
    merged: the same prediction files as the unsharded `evaluate` run wrote (the files it scored)."""
    from bodymap.config import load_params
    from bodymap.data.sets import pipeline_sets
    from bodymap.determinism import torch_threads
    from bodymap.eval.pipeline import predict_report_sets
    from bodymap.shards import merge_shards

    checkpoint = work.root / "models" / "finetune" / "last.pt"
    params = load_params(work.params)
    sets = pipeline_sets(work.render, params.data.coco)
    shards = [work.root / f"eval-shard{k}" for k in range(2)]
    size = params.render.image_size
    with torch_threads(params.evaluate.threads):  # as `bodymap evaluate --shard` runs it (bits follow the count)
        for k, directory in enumerate(shards):
            predict_report_sets(work.template, sets, work.root / "cse", checkpoint, directory, size, "cpu", k, 2)
    merged = work.root / "eval-merged"
    counts = merge_shards(shards[::-1], merged, "predictions")
    assert counts == {name: int(evaluated[f"bodymap/{name}/images"]) for name in counts}
    whole = work.root / "evaluation" / "predictions" / "bodymap"
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert len(files) > len(counts) and files == sorted(p.relative_to(merged) for p in merged.rglob("*") if p.is_file())
    assert all((whole / f).read_bytes() == (merged / f).read_bytes() for f in files)
