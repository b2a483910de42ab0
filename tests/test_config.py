"""The params schema: defaults, strictness, messages that name the key, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bodymap.config import STAGES, Params, apply_overrides, default_params_dict, load_params, validate_params
from bodymap.errors import BodymapError

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_validate_and_cover_every_stage():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Stage sections first, in pipeline order; then the non-stage sections the schema declares (e.g. `cluster`).
    assert list(raw)[: len(STAGES)] == list(STAGES)
    assert list(raw) == [name for name in Params.model_fields if name in raw]
    for stage in STAGES:
        assert getattr(params, stage) is not None


def test_defaults_roundtrip():
    assert validate_params(default_params_dict()) == Params()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"render": {"image_size": "big"}}, 'render.image_size: expected a positive int, got "big"'),
        ({"render": {"image_size": 0}}, "render.image_size: expected a positive int, got 0"),
        ({"render": {"image_size": 12.5}}, "render.image_size: expected a positive int, got 12.5"),
        ({"render": {"imagesize": 64}}, "render.imagesize: unknown key"),
        ({"renderer": {}}, "renderer: unknown key"),
        (
            {"template": {"geodesics": {"mode": "fast"}}},
            'template.geodesics.mode: expected one of "dense", "landmarks"',
        ),
        ({"template": {"shape": {"age": 1.5}}}, "template.shape.age: expected a number in [0, 1], got 1.5"),
        ({"cse_init": {"train": {"amp": "yes"}}}, 'cse_init.train.amp: expected a boolean (true/false), got "yes"'),
        ({"render": {"camera": {"fov_deg": {"lo": 60, "hi": 30}}}}, "render.camera.fov_deg: lo (60.0) must not"),
        ({"evaluate": {"windows_px": [5, "ten"]}}, 'evaluate.windows_px.1: expected a positive int, got "ten"'),
        ({"cluster": {"nodes": 0}}, "cluster.nodes: expected an int in [1, 256], got 0"),
        ({"cluster": {"launcher": "mpijob"}}, 'cluster.launcher: expected one of "trainjob", "pytorchjob"'),
        ({"cluster": {"shm_size": "lots"}}, "cluster.shm_size: expected a Kubernetes quantity"),
        ({"cluster": {"namespace": "Body_Map"}}, "cluster.namespace: expected a Kubernetes name"),
        ({"cluster": {"toleration": {"operator": "Equal"}}}, "cluster.toleration: operator Equal needs a value"),
    ],
)
def test_bad_values_name_the_key_path(data, expected):
    with pytest.raises(BodymapError) as info:
        validate_params(data, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_an_old_params_file_is_told_where_the_coco_locations_moved(tmp_path):
    """The DensePose-COCO locations were `pseudo_gt.coco_*`; an old file gets one error per key naming its new path."""
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"pseudo_gt": {"coco_annotations": "a.json", "coco_val_images": "val2014"}}))
    with pytest.raises(BodymapError) as info:
        load_params(old)
    assert str(info.value) == (
        f"{old}: pseudo_gt.coco_annotations: moved to data.coco.train_annotations; "
        "pseudo_gt.coco_val_images: moved to data.coco.val_images"
    )
    with pytest.raises(BodymapError, match="pseudo_gt.coco_test_images: moved to data.coco.test_images"):
        load_params(None, ["pseudo_gt.coco_test_images=/data/coco/val2014"])
    moved = load_params(None, ["data.coco.test_images=/data/coco/val2014"])
    assert moved.data.coco.test_images == "/data/coco/val2014"


def test_every_error_is_reported_at_once():
    with pytest.raises(BodymapError) as info:
        validate_params({"render": {"image_size": -1, "seed": "x"}, "template": {"lbo_k": 0}})
    message = str(info.value)
    for key in ("render.image_size", "render.seed", "template.lbo_k"):
        assert key in message


def test_overrides_are_typed_and_validated(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"render": {"image_size": 64}}))
    params = load_params(
        path, ["render.image_size=32", "evaluate.windows_px=[1, 2]", "render.appearance.background_dir=null"]
    )
    assert params.render.image_size == 32
    assert params.evaluate.windows_px == [1, 2]
    assert params.render.appearance.background_dir is None
    assert params.template == Params().template
    with pytest.raises(BodymapError, match="render.image_size: expected a positive int"):
        load_params(path, ["render.image_size=big"])
    with pytest.raises(BodymapError, match="render.nope: unknown key"):
        load_params(path, ["render.nope=1"])


def test_override_syntax_errors():
    with pytest.raises(BodymapError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["render.image_size"])
    with pytest.raises(BodymapError, match="render.image_size is not a section"):
        apply_overrides({"render": {"image_size": 3}}, ["render.image_size.x=1"])


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(BodymapError, match="cannot read params file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [unclosed")
    with pytest.raises(BodymapError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(BodymapError, match="expected a mapping of stage sections"):
        load_params(bad)
