"""The ablation experiments are valid params and each differs from the default run (scripts/ablations.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ROOT, load_script

from bodymap.config import load_params, parse_override

sys.path.insert(0, str(ROOT / "scripts"))  # the scripts import their shared `_experiments` module


def _ablations():
    return load_script("scripts/ablations.py")


EXPERIMENTS = _ablations().EXPERIMENTS


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_each_experiment_validates_and_changes_the_default(name: str) -> None:
    _, _, overrides = EXPERIMENTS[name]
    default = load_params(ROOT / "params.yaml").model_dump(mode="json")
    changed = load_params(ROOT / "params.yaml", overrides).model_dump(mode="json")
    assert changed != default
    for text in overrides:
        keys, _ = parse_override(text)
        node = default
        for key in keys:  # dvc exp run --set-param edits params.yaml, so every key must already be there
            assert key in node, f"{name}: {text} names a key params.yaml's schema does not have"
            node = node[key]


def test_default_rows_name_every_table_once() -> None:
    module = _ablations()
    tables = [table for table, *_ in module.EXPERIMENTS.values()]
    assert sorted({t for t, _ in module.DEFAULT_ROWS}) == sorted(set(tables))
    assert len(module.DEFAULT_ROWS) == len(set(tables))


def _seeds():
    return load_script("scripts/seeds.py")


def test_seed_experiments_set_every_training_seed_and_summarise_the_spread() -> None:
    seeds = _seeds()
    params = load_params(ROOT / "params.yaml", seeds.overrides(7))
    assert params.cse_init.train.seed == params.pretrain.train.seed == params.finetune.train.seed == 7
    runs = {
        "workspace": {"bodymap/test/cm_10": 20.0, "cse/test/cm_10": 12.0},
        "seed-1": {"bodymap/test/cm_10": 22.0, "cse/test/cm_10": 11.0},
        "seed-2": {"bodymap/test/cm_10": 24.0, "cse/test/cm_10": 13.0},
        "t5-unet": {"bodymap/test/cm_10": 99.0},  # another experiment: not a seed run
    }
    per_run = seeds.rows(runs)
    assert len(per_run) == 9
    summary = {r["model"]: r["test 10 cm"] for r in seeds.summary(per_run)}
    assert summary["bodymap"] == "22.0 ± 2.0 (20.0..24.0)"
    assert summary["bodymap - cse"] == "10.0 ± 1.7 (8.0..11.0)"  # gaps 8, 11, 11
    assert summary["cse"].startswith("12.0 ± 1.0")


def test_failed_and_unfinished_experiments_are_not_counted_as_samples(monkeypatch) -> None:
    """A killed `dvc exp run` is listed with an error and its baseline's metrics, a queued or running one with the
    workspace's metrics and no timestamp; neither may count as a seed."""
    import json
    import subprocess

    import _experiments

    metrics = {"metrics/evaluate.json": {"data": {"bodymap/test/cm_10": 10.1}}}
    shown = [
        {
            "rev": "workspace",
            "data": {"metrics": metrics},
            "experiments": [
                {"name": "seed-1", "revs": [{"name": "seed-1", "error": None,
                                             "data": {"metrics": metrics, "timestamp": "2026-12-01T23:59:04"}}]},
                {"name": "seed-2", "revs": [{"name": "seed-2", "error": {"msg": "Experiment run failed"},
                                             "data": {"metrics": metrics, "timestamp": "2026-12-01T23:59:04"}}]},
                {"name": "seed-3", "revs": [{"name": "seed-3", "error": None,
                                             "data": {"rev": "workspace", "timestamp": None, "metrics": metrics}}]},
            ],
        }
    ]  # fmt: skip

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(shown), stderr="")

    monkeypatch.setattr(_experiments.subprocess, "run", fake_run)
    assert set(_experiments.experiments()) == {"workspace", "seed-1"}


def test_run_puts_the_venv_on_the_queue_workers_path(monkeypatch) -> None:
    """The queue's worker starts `dvc` and `bodymap` by name: `run` must hand it the venv's bin directory."""
    import os

    import _experiments

    calls = []
    monkeypatch.setattr(_experiments.subprocess, "run", lambda cmd, **kwargs: calls.append((cmd, kwargs)))
    monkeypatch.setenv("PATH", "/usr/bin")
    _experiments.run_all()
    ((cmd, kwargs),) = calls
    assert cmd[1:] == ["exp", "run", "--run-all", "--jobs", "1"] and kwargs["check"]
    assert kwargs["env"]["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert (Path(kwargs["env"]["PATH"].split(os.pathsep)[0]) / "dvc").exists()
