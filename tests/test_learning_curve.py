"""benchmarks/learning_curve.py: rows from side-by-side invocations merge, and the 1x rows come from a run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, load_script


def _curve():
    return load_script("benchmarks/learning_curve.py")


def _row(curve, model: str, budget: float, cm: float, recipe: str = "today") -> dict:
    row = {"model": model, "recipe": recipe, "budget": budget, "steps": 1, "test_cm_10": cm}
    return dict.fromkeys(curve.COLUMNS) | row


def test_rows_of_two_invocations_merge_and_a_rerun_replaces_its_own(tmp_path: Path) -> None:
    curve = _curve()
    path = tmp_path / "curve.csv"
    curve.add_row(path, _row(curve, "bodymap", 8, 20.0))
    curve.add_row(path, _row(curve, "cse", 2, 16.0))  # another process, which never saw the bodymap row
    rows = curve.add_row(path, _row(curve, "cse", 2, 17.0))
    assert [(r["model"], float(r["budget"]), float(r["test_cm_10"])) for r in rows] == [
        ("bodymap", 8.0, 20.0),
        ("cse", 2.0, 17.0),
    ]
    assert [(r["model"], r["test_cm_10"]) for r in curve.read_rows(path)] == [("bodymap", "20.0"), ("cse", "17.0")]
    assert not path.with_suffix(".csv.tmp").exists()


def test_rows_of_another_recipe_are_kept_beside_todays(tmp_path: Path) -> None:
    curve = _curve()
    path = tmp_path / "curve.csv"
    curve.add_row(path, _row(curve, "cse", 2, 16.0, recipe="CSE 1200 steps on 400 images, whole images"))
    rows = curve.add_row(path, _row(curve, "cse", 2, 20.0, recipe=curve.recipe("cse")))
    assert sorted(float(r["test_cm_10"]) for r in rows) == [16.0, 20.0]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert str(params["cse_init"]["train"]["steps"]) in curve.recipe("cse")
    assert curve.recipe("cse") in curve.recipe("bodymap")  # BodyMap's recipe names its input's


def test_the_1x_rows_are_the_runs_own_stage_metrics(tmp_path: Path) -> None:
    curve = _curve()
    steps, batch = curve.default_steps("pretrain")
    (tmp_path / "metrics").mkdir()
    values = {"bodymap/test/cm_10": 12.0, "bodymap/test/gpsm_ap": 12.5, "bodymap/val/cm_10": 12.2, "train_seconds": 9.0}
    (tmp_path / "metrics" / "pretrain.json").write_text(json.dumps(values))
    row = curve.baseline("bodymap", tmp_path / "data")
    assert (row["steps"], row["images_seen"], row["budget"]) == (steps, steps * batch, 1.0)
    assert (row["test_cm_10"], row["test_gpsm_ap"], row["val_cm_10"], row["train_seconds"]) == (12.0, 12.5, 12.2, 9.0)
    assert row["test_window_10px"] is None  # absent in the run's metrics: left empty, not invented
    tagged = curve.baseline("bodymap", tmp_path / "data", tag="another machine")
    assert tagged["recipe"] == curve.recipe("bodymap") + " [another machine]"
    path = tmp_path / "curve.csv"
    curve.add_row(path, row)
    assert len(curve.add_row(path, tagged)) == 2  # a curve of another machine is its own line, not a rerun
    with pytest.raises(SystemExit, match=r"metrics/cse_init\.json"):
        curve.baseline("cse", tmp_path / "data")


def test_a_run_with_another_training_recipe_is_not_taken_for_the_1x_row(tmp_path: Path) -> None:
    curve = _curve()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "pretrain.json").write_text(json.dumps({"bodymap/test/cm_10": 12.0}))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert curve.baseline("bodymap", tmp_path / "data")["test_cm_10"] == 12.0  # the same recipe: taken
    params["pretrain"]["train"]["steps"] += 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit, match=r"params\.yaml: pretrain\.train\.steps is \d+, this checkout's"):
        curve.baseline("bodymap", tmp_path / "data")
    params["pretrain"]["train"]["steps"] -= 1
    params["cse_init"]["train_crop"] = None  # the same BodyMap steps on another CSE: another recipe
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit, match=r"the run's recipe is .*whole images"):
        curve.baseline("bodymap", tmp_path / "data")


def test_each_seed_is_its_own_row_and_rows_from_before_seeds_are_seed_0(tmp_path: Path) -> None:
    curve = _curve()
    path = tmp_path / "curve.csv"
    old = _row(curve, "bodymap", 16, 50.9)
    del old["seed"]  # a file written before the seed column
    with path.open("w") as f:
        f.write(",".join(k for k in old) + "\n" + ",".join("" if v is None else str(v) for v in old.values()) + "\n")
    assert curve.key(curve.read_rows(path)[0])[-1] == 0
    curve.add_row(path, _row(curve, "bodymap", 16, 51.5) | {"seed": 1})
    rows = curve.add_row(path, _row(curve, "bodymap", 16, 52.0) | {"seed": 1})  # a rerun of seed 1 replaces it
    assert sorted((int(r["seed"] or 0), float(r["test_cm_10"])) for r in rows) == [(0, 50.9), (1, 52.0)]


def test_a_seeded_run_trains_with_that_seed_in_its_own_directory(tmp_path: Path, monkeypatch) -> None:
    curve = _curve()
    calls = []

    def stage(args, **_):  # stands in for the stage command: records its arguments, writes its metrics
        calls.append(args)
        out = Path(args[args.index("--metrics") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"bodymap/test/cm_10": 40.0 + len(calls)}))

    monkeypatch.setattr(curve.subprocess, "run", stage)
    rows = [curve.run("bodymap", 2, tmp_path, tmp_path / "data", seed=s) for s in (0, 3)]
    assert [r["seed"] for r in rows] == [0, 3] and [r["test_cm_10"] for r in rows] == [41.0, 42.0]
    assert "pretrain.train.seed=0" in calls[0] and "pretrain.train.seed=3" in calls[1]
    dirs = [Path(c[c.index("--metrics") + 1]).parent.name for c in calls]
    assert dirs == ["bodymap-2x", "bodymap-2x-seed3"]  # the default seed keeps the directory earlier runs used
