"""What `bodymap render` writes: the docs/formats.md layout, DensePose-COCO JSON that pycocotools reads, sparse
points that agree with the dense GT and the template, exact flow, byte-identical reruns, and clean failures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, TEST_RENDER_PARAMS
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from bodymap.config import RenderParams
from bodymap.errors import BodymapError
from bodymap.render.run import render_dataset
from bodymap.render.settings import build_settings

# pycocotools' C extension trips numpy 2's copy-keyword deprecation on every decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.mask")

CLI = [sys.executable, "-m", "bodymap.cli", "render"]
SPLITS = {  # annotations directory -> dense GT directory
    "train": "train",
    "val": "val",
    "test": "test",
    "coco_like/train": "coco_like_dense/train",
    "coco_like/val": "coco_like_dense/val",
    "coco_like/test": "coco_like_dense/test",
    "video": "video",
}


def _gt(rendered: Path, split: str, file_name: str) -> dict[str, np.ndarray]:
    stem = file_name.removeprefix("images/").rsplit(".", 1)[0]
    with np.load(rendered / SPLITS[split] / "gt" / f"{stem}.npz") as data:
        return dict(data)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_dense_gt_format(rendered):
    assert (rendered / "contact_sheet.png").stat().st_size > 0
    for split, gt_dir in SPLITS.items():
        doc = json.loads((rendered / split / "annotations.json").read_text())
        assert doc["images"], split
        assert (rendered / gt_dir / "manifest.json").exists()
        for image in doc["images"]:
            assert (rendered / split / image["file_name"]).exists()
            gt = _gt(rendered, split, image["file_name"])
            assert gt["vertex"].dtype == np.int32 and gt["person"].dtype == np.int16
            assert gt["chart"].dtype == np.uint8 and gt["layer"].dtype == np.uint8 and gt["depth"].dtype == np.float16
            assert gt["vertex"].shape == (image["height"], image["width"])
            np.testing.assert_array_equal(gt["mask"], gt["vertex"] >= 0)
            np.testing.assert_array_equal(gt["person"] >= 0, gt["vertex"] >= 0)
    # The coco-like split holds images and sparse annotations only; its dense GT lives apart.
    assert {p.name for p in (rendered / "coco_like" / "train").iterdir()} == {"images", "annotations.json"}
    assert all(p.suffix == ".jpg" for p in (rendered / "coco_like" / "train" / "images").iterdir())
    manifest = json.loads((rendered / "manifest.json").read_text())
    assert manifest["params_hash"] and manifest["seed"] == 0
    pools = [set(manifest[f"{name}_identities"]) for name in ("train", "val", "test")]
    assert all(pools) and sum(len(p) for p in pools) == len(set.union(*pools)) == len(manifest["identities"])


def test_pycocotools_loads_every_json_and_decodes_every_rle(rendered):
    for split in SPLITS:
        coco = COCO(str(rendered / split / "annotations.json"))
        assert coco.getAnnIds(), split
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[ann["image_id"]]
            mask = coco.annToMask(ann)
            gt = _gt(rendered, split, image["file_name"])
            person = ann["id"] % 100 - 1
            np.testing.assert_array_equal(mask.astype(bool), gt["person"] == person)
            assert ann["area"] == int(mask.sum()) == int(mask_util.area(ann["segmentation"]))
            assert len(ann["keypoints"]) == 51
            if "dp_masks" in ann:
                assert len(ann["dp_masks"]) == 14
                parts = [mask_util.decode(m) for m in ann["dp_masks"] if m]
                assert parts and all(p.shape == (256, 256) for p in parts)


def test_dp_points_lie_in_their_box_and_match_dense_gt_and_charts(rendered, template):
    points = 0
    for split in SPLITS:
        doc = json.loads((rendered / split / "annotations.json").read_text())
        images = {i["id"]: i for i in doc["images"]}
        for ann in doc["annotations"]:
            if "dp_x" not in ann:
                continue
            assert ann["ref_model"] == template.name
            x, y, w, h = ann["bbox"]
            px = np.asarray(ann["dp_x"]) * w / 255.0 + x
            py = np.asarray(ann["dp_y"]) * h / 255.0 + y
            assert (px >= x).all() and (px <= x + w).all() and (py >= y).all() and (py <= y + h).all()
            gt = _gt(rendered, split, images[ann["image_id"]]["file_name"])
            vertex = np.asarray(ann["dp_vertex"])
            np.testing.assert_array_equal(gt["vertex"][py.astype(int), px.astype(int)], vertex)
            np.testing.assert_array_equal(ann["dp_I"], template.chart[vertex])
            np.testing.assert_allclose(ann["dp_U"], template.uv[vertex, 0], atol=1e-5)
            np.testing.assert_allclose(ann["dp_V"], template.uv[vertex, 1], atol=1e-5)
            points += len(vertex)
    assert points > 1000


def test_crowds_small_people_and_video_records(rendered):
    coco = json.loads((rendered / "coco_like" / "train" / "annotations.json").read_text())
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]])
    assert per_image.max() >= 2  # crowded
    video = json.loads((rendered / "video" / "annotations.json").read_text())
    frames = sorted(video["images"], key=lambda i: i["frame_id"])
    assert [i["frame_id"] for i in frames] == list(range(13)) and frames[0]["nframes"] == 13
    labelled = {i["id"] for i in frames if i["is_labeled"]}
    assert labelled == {frames[k]["id"] for k in (0, 4, 8, 12)}
    for ann in video["annotations"]:
        assert "track_id" in ann
        assert ("dp_x" in ann) <= (ann["image_id"] in labelled)


def test_flow_files_warp_gt_onto_the_next_frame(rendered, template):
    for t in range(12):
        gt_a, gt_b = _gt(rendered, "video", f"000/{t:04d}.png"), _gt(rendered, "video", f"000/{t + 1:04d}.png")
        with np.load(rendered / "video" / "flow" / "000" / f"{t:04d}.npz") as flow:
            for (a, b), key in (((gt_a, gt_b), "forward"), ((gt_b, gt_a), "backward")):
                valid = flow[f"{key}_valid"]
                assert valid.sum() > 0.5 * (a["vertex"] >= 0).sum()
                rows, cols = np.nonzero(valid)
                f = flow[key][rows, cols]
                x, y = np.floor(cols + 0.5 + f[:, 0]).astype(int), np.floor(rows + 0.5 + f[:, 1]).astype(int)
                assert (b["person"][y, x] == a["person"][rows, cols]).all()
                same = b["chart"][y, x] == a["chart"][rows, cols]
                gap = np.linalg.norm(
                    template.vertices[b["vertex"][y, x]] - template.vertices[a["vertex"][rows, cols]], axis=1
                )
                # 96 px images: a pixel spans ~2-3 cm of body; skirts may switch their nearest leg.
                assert same.mean() > 0.93 and np.median(gap) < 0.03, (key, t, same.mean(), np.median(gap))
    assert not (rendered / "video" / "flow" / "000" / "0012.npz").exists()  # no flow after the last frame


@pytest.fixture
def cli_in_process(monkeypatch):
    """`bodymap ...` run in this process (no interpreter start-up), root logging restored afterwards."""
    from bodymap.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setenv("BODYMAP_TRACKING", "0")  # stage runs log to MLflow; not from tests
    yield lambda *args: main([str(a) for a in args])
    root.handlers[:] = handlers
    root.setLevel(level)


def test_two_runs_give_the_same_bytes_with_workers_and_shards(rendered, template_dir, tmp_path, cli_in_process):
    """`bodymap render` twice more, as two shards: shard 0 with 2 worker processes, shard 1 in this process, then
    `--merge`: the bytes of the fixture's single-process run (run.yaml aside: it records the git state)."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"render": {**TEST_RENDER_PARAMS, "workers": 2}}))
    shards, merged, metrics = [tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged", tmp_path / "m.json"
    common = ["--params", params, "--template", template_dir, "-q", "--num-shards", 2]
    assert cli_in_process("render", *common, "--out", shards[0], "--shard", 0, "--metrics", metrics) == 0
    assert json.loads(metrics.read_text())["workers"] == 2
    assert cli_in_process("render", *common, "--out", shards[1], "--shard", 1, "--set", "render.workers=1") == 0
    assert cli_in_process("render", *common, "--out", merged, "--merge", *shards) == 0
    expected = {k: v for k, v in _files(rendered).items() if k != "run.yaml"}
    got = {k: v for k, v in _files(merged).items() if k != "run.yaml"}
    assert got.keys() == expected.keys()
    assert [k for k in expected if got[k] != expected[k]] == []


def test_same_bytes_in_a_process_with_one_thread_and_other_blas_kernels(rendered, template_dir, tmp_path):
    """`bodymap render` in a fresh process with torch and OpenBLAS on one thread and OpenBLAS's SSE3 kernels
    (OPENBLAS_CORETYPE=Prescott, no AVX nor FMA) writes the fixture's bytes. With numpy's BLAS in the camera
    transform the exact flow differed in its last bits (up to 9e-6 px) between BLAS kernels."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"render": TEST_RENDER_PARAMS}))
    env = {
        **os.environ,
        "BODYMAP_TRACKING": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Prescott",
    }
    args = [*CLI, "--params", str(params), "--template", str(template_dir), "--out", str(tmp_path / "out"), "-q"]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {k: v for k, v in _files(rendered).items() if k != "run.yaml"}
    got = {k: v for k, v in _files(tmp_path / "out").items() if k != "run.yaml"}
    assert got.keys() == expected.keys()
    assert [k for k in expected if got[k] != expected[k]] == []


def _cli(tmp_path: Path, template_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [*CLI, "--template", str(template_dir), "--out", str(tmp_path / "out"), "-q"]
    args += [f"--set={o}" for o in overrides]
    env = {**os.environ, "BODYMAP_TRACKING": "0"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("render.image_size=0", "render.image_size"),
        ("render.coco_like.jpeg_quality={lo: 50, hi: 500}", "render.coco_like"),
        ("render.appearance.background_dir=/nonexistent/backgrounds", "/nonexistent/backgrounds"),
    ],
)
def test_bad_params_fail_with_one_clear_line_and_write_nothing(tmp_path, template_dir, override, named):
    result = _cli(tmp_path, template_dir, override, "render.train_images=2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # no output and no temporary directory


def test_unreadable_background_mid_run_leaves_no_partial_split(tmp_path, template_dir):
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    (backgrounds / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous output")
    params = {**TEST_RENDER_PARAMS, "appearance": {"background_dir": str(backgrounds)}}
    with pytest.raises(BodymapError, match="broken.png"):
        render_dataset(build_settings(RenderParams.model_validate(params)), template_dir, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backgrounds", "out"]  # no temporary directory left
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # the previous output is untouched
