"""The whole KFP pipeline, run for real with kfp.local's SubprocessRunner on tiny parameters.

Every task runs its component in a subprocess of this environment, exactly the code a cluster pod runs, minus the
Kubernetes settings (checked on the compiled YAML in test_pipeline.py). Everything is written under tmp_path: the
pipeline root, the working directory, and the MLflow store the register stage writes to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bodymap.config import SHARED_SECTIONS, STAGES, load_params, section, validate_params
from pipelines.pipeline import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"steps": 2, "batch_size": 2, "warmup_steps": 0, "checkpoint_every": 2, "log_every": 1}
# Small enough for ~3 minutes on two shared cores; every stage still does its real work on real data.
TINY = {
    "template": {"geodesics": {"mode": "landmarks", "landmarks": 128}, "lbo_k": 16, "picture_size": 64},
    "render": {
        "image_size": 64,
        "identities": 6,
        "train_images": 8,
        "cse_train_images": 8,  # CSE's own split (1,600 by default: most of the render's time here)
        "val_images": 4,
        "test_images": 4,
        "workers": 1,
        "contact_sheet": 4,
        "coco_like": {"train_images": 4, "val_images": 3},
        "video": {"sequences": 1, "frames": 5, "labelled_every": 2},
    },
    "cse_init": {"train": TRAIN},
    "pretrain": {
        "model": {"depth": 4, "out_indices": [0, 1, 2, 3], "features": 16},
        "losses": {"geodesic_pixels": 8, "consistency_references": 8},
        "train": TRAIN,
    },
    "finetune": {"losses": {"geodesic_pixels": 8, "consistency_references": 8}, "train": TRAIN},
    "evaluate": {"temporal_intervals": [1, 2], "visualisations": 1},
}
TASKS = {
    "template",
    "render",
    "gpu-placement",
    "cse-init",
    "pseudo-gt",
    "pretrain",
    "gpu-placement-2",
    "finetune",
    "evaluate",
    "register",
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*have no effect in the current local runner:UserWarning")  # k8s settings
@pytest.mark.filterwarnings("ignore:.*non-Python base image:RuntimeWarning")  # the project image is not `python:*`
def test_whole_pipeline_runs_locally(tmp_path, monkeypatch):
    from kfp import local

    monkeypatch.chdir(tmp_path)  # stages resolve nothing against the repo; nothing is written into it
    monkeypatch.setenv("BODYMAP_TRACKING", "0")  # stage runs untracked; register still needs a registry:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors; two threads on a shared 2-core box only wait
    monkeypatch.delenv("BODYMAP_PIPELINE_RUN_ID", raising=False)
    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    tiny = validate_params(TINY)
    arguments = {f"{name}_params": json.dumps(section(tiny, name)) for name in (*STAGES, *SHARED_SECTIONS)}

    start = time.monotonic()
    run = build_pipeline(load_params(ROOT / "params.yaml"))(**arguments)  # raises if any task fails
    seconds = time.monotonic() - start
    print(f"local pipeline run: {seconds:.0f} s")

    (run_dir,) = root.iterdir()
    assert {p.name for p in run_dir.iterdir()} == TASKS
    for task in TASKS:
        assert (run_dir / task / "executor_output.json").is_file(), task

    metrics = run.outputs["Output"]  # the pipeline's output: the evaluate stage's metrics
    for model in ("bodymap", "cse", "constant", "random"):
        for name in ("val", "test", "coco_val", "coco_test", "video"):
            assert f"{model}/{name}/gpsm_ap" in metrics.metadata, (model, name)
        for name in ("test", "coco_test_dense", "video"):
            assert f"{model}/{name}/window_10px" in metrics.metadata, (model, name)
    assert "bodymap/video/temporal_k1" in metrics.metadata
    full = json.loads(Path(metrics.path).read_text())
    assert set(metrics.metadata) < set(full)  # the KFP metrics are the headline; the file keeps every number

    assert (run_dir / "evaluate" / "report").read_text().startswith("# BodyMap vs CSE, beside the trivial floors")
    decision = json.loads((run_dir / "register" / "decision").read_text())
    assert decision["version"] == "1" and decision["promoted"] is True  # the first version becomes champion
    assert (tmp_path / "mlflow.db").is_file()
