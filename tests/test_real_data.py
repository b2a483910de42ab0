"""The real-data path, as a user with DensePose-COCO / DensePose-PoseTrack on disk runs it.

Files are written the way the real datasets are laid out: a flat folder of JPEGs of mixed sizes and a COCO JSON
whose points carry DensePose's own fields only (`dp_I/U/V`, no `ref_model`, no `dp_vertex`), no manifest, no dense
truth; a DensePose-PoseTrack JSON (`vid_id`, `frame_id`, `nframes`, `is_labeled`, `ignore_regions_x/y`,
`track_id`) with its frames under `images/<split>/<video>/`. The template is built by `bodymap template` from an
SMPL-format model file and a `UV_Processed.mat` (tests/densepose_files.py: the Anny mesh, which the rendered
pretraining data is made of, so the test names it as that template). Then pseudo_gt -> finetune -> evaluate run
from the `data.coco` params, the real stage commands, as subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from densepose_files import write_smpl_like_model, write_uv_processed
from pycocotools import mask as mask_utils

from bodymap import cli
from bodymap.config import default_params_dict
from bodymap.data.images import image_key
from bodymap.io import read_image
from bodymap.template.build import build_from_densepose

pytestmark = pytest.mark.slow

SIZES = ((100, 104), (120, 112), (104, 136))  # (height, width) canvases; renders (96 x 96) sit right of x = 8
TINY = {
    "cse_init": {"train": {"steps": 2, "batch_size": 2, "log_every": 1, "warmup_steps": 1}},
    "pretrain": {"train": {"steps": 2, "batch_size": 2, "log_every": 1, "warmup_steps": 1, "checkpoint_every": 2}},
    "finetune": {"train": {"steps": 2, "batch_size": 2, "log_every": 1, "warmup_steps": 1}},
    "evaluate": {"visualisations": 0},
    "pseudo_gt": {"pictures": 1},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _rle_str(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def write_real_layout(split: Path, out_json: Path, image_root: Path, name_of, posetrack: bool = False) -> dict:
    """Rewrite a rendered coco-like split as a real DensePose file: each image pasted into a canvas of another size
    and saved as JPEG under `image_root / name_of(k, id)`; boxes, polygons, keypoints shifted; box-relative dp_*
    kept; `ref_model`, `dp_vertex` dropped. With `posetrack`, the images form one video whose odd frames are
    unlabelled (their people keep boxes, lose points) and whose frames carry an ignore region."""
    doc = json.loads((split / "annotations.json").read_text())
    images, shift = [], {}
    for k, image in enumerate(doc["images"]):
        rgb = read_image(split / image["file_name"])
        (h, w), (ch, cw) = rgb.shape[:2], SIZES[k % len(SIZES)]
        dy, dx = (ch - h) // 2, cw - w
        canvas = np.full((ch, cw, 3), 127, np.uint8)
        canvas[dy : dy + h, dx : dx + w] = rgb
        file_name = name_of(k, image["id"])
        (image_root / file_name).parent.mkdir(parents=True, exist_ok=True)
        jpeg = [cv2.IMWRITE_JPEG_QUALITY, 95]
        cv2.imwrite(str(image_root / file_name), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), jpeg)
        record = {"id": image["id"], "file_name": file_name, "height": ch, "width": cw}
        if posetrack:
            record.update(vid_id="000342", frame_id=k, nframes=len(doc["images"]), is_labeled=k % 2 == 0)
            record.update(ignore_regions_x=[[0, 6, 6, 0], []], ignore_regions_y=[[0, 0, 6, 6], []])
        images.append(record)
        shift[image["id"]] = (dx, dy, ch, cw, record)
    annotations = []
    for ann in doc["annotations"]:
        dx, dy, ch, cw, record = shift[ann["image_id"]]
        out = {key: value for key, value in ann.items() if key not in ("ref_model", "dp_vertex", "track_id")}
        out["bbox"] = [ann["bbox"][0] + dx, ann["bbox"][1] + dy, *ann["bbox"][2:]]
        small = mask_utils.decode(ann["segmentation"])
        big = np.zeros((ch, cw), np.uint8)
        big[dy : dy + small.shape[0], dx : dx + small.shape[1]] = small
        out["segmentation"] = _rle_str(big)
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        kp[:, :2] += np.where(kp[:, 2:] > 0, [dx, dy], 0)
        out["keypoints"] = [round(float(v), 2) if i % 3 < 2 else int(v) for i, v in enumerate(kp.ravel())]
        if posetrack:
            out["track_id"] = ann.get("track_id", ann["id"] % 100)
            if not record["is_labeled"]:
                out = {key: value for key, value in out.items() if not key.startswith("dp_")}
        annotations.append(out)
    real = {"images": images, "annotations": annotations, "categories": doc["categories"]}
    out_json.write_text(json.dumps(real))
    return real


class Work:
    """The stage commands, run in this process through `bodymap.cli.main` (as `bodymap <stage> ...` runs them; a
    subprocess per stage cost 4 s of imports each), with a throwaway MLflow store."""

    def __init__(self, root: Path, params: dict) -> None:
        self.root = root
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(self, *args: str) -> int:
        start = time.monotonic()
        saved = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.root / 'mlflow.db'}"
        try:
            code = cli.main([*args, "--params", str(self.root / "params.yaml"), "-q"])
        finally:
            if saved is None:
                os.environ.pop("MLFLOW_TRACKING_URI")
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved
        print(f"{args[0]}: {time.monotonic() - start:.1f} s")
        return code

    def metrics(self, name: str) -> dict:
        return json.loads((self.root / "metrics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def real(tmp_path_factory, template, template_dir: Path, rendered: Path) -> tuple[Work, dict]:
    root = tmp_path_factory.mktemp("real")
    files = root / "densepose"  # what a user has on disk next to the datasets
    files.mkdir()
    np.save(files / "symmetry.npy", template.symmetry)
    model = write_smpl_like_model(files / "basicModel_neutral.npz", template)
    uv = write_uv_processed(files / "UV_Processed.mat", template)
    coco = root / "coco"
    coco_name = lambda split: lambda k, i: f"COCO_{split}2014_{i:012d}.jpg"  # noqa: E731
    docs = {
        "train": write_real_layout(rendered / "coco_like" / "train", root / "posetrack_train.json",
                                   root / "posetrack", lambda k, i: f"images/train/000342_mpii/{k:06d}.jpg", True),
        "val": write_real_layout(rendered / "coco_like" / "val", root / "densepose_coco_2014_minival.json",
                                 coco / "val2014", coco_name("val")),
        "test": write_real_layout(rendered / "coco_like" / "test", root / "densepose_coco_2014_test.json",
                                  coco / "val2014", coco_name("val")),
    }  # fmt: skip
    params = _merge(default_params_dict(), TINY)
    params["data"]["coco"].update(
        train_annotations=str(root / "posetrack_train.json"), train_images=str(root / "posetrack"),
        val_annotations=str(root / "densepose_coco_2014_minival.json"), val_images=str(coco / "val2014"),
        test_annotations=str(root / "densepose_coco_2014_test.json"), test_images=str(coco / "val2014"),
    )  # fmt: skip
    work = Work(root, params)
    (root / "metrics").mkdir()
    # `bodymap template` with template.source: densepose, minus its geodesic build and exact-geodesic check (25 s):
    # the mesh is the test template's, so its geodesics are the same file.
    built = build_from_densepose(model, uv, template.name, lbo_k=int(template.lbo_basis.shape[1]),
                                 symmetry_path=files / "symmetry.npy")  # fmt: skip
    built.save(root / "template")
    shutil.copy(template_dir / "geodesics_landmarks.npz", root / "template")
    r = lambda name: str(root / name)  # noqa: E731
    common = ("--template", r("template"), "--render", str(rendered), "--cse", r("cse"))
    steps = [
        ("cse_init", *common[:4], "--model-dir", r("models/cse"), "--out", r("cse"), "--metrics", r("metrics/c.json")),
        ("pretrain", *common, "--model-dir", r("models/pretrain"), "--out", r("pretrain")),
        ("pseudo_gt", *common, "--out", r("pseudo_gt"), "--metrics", r("metrics/pseudo_gt.json")),
        ("finetune", *common, "--pseudo-gt", r("pseudo_gt"), "--pretrained", r("models/pretrain/last.pt"),
         "--model-dir", r("models/finetune"), "--out", r("finetune"), "--metrics", r("metrics/finetune.json")),
        ("evaluate", *common, "--model", r("models/finetune/last.pt"), "--out", r("evaluation"),
         "--metrics", r("metrics/evaluate.json")),
    ]  # fmt: skip
    for step in steps:
        assert work.run(*step) == 0, step[0]
    return work, docs


def test_pseudo_gt_labels_every_real_image_at_its_own_size_and_honours_posetrack_fields(real) -> None:
    work, docs = real
    out = work.root / "pseudo_gt"
    for image in docs["train"]["images"]:
        with np.load(out / "dense" / f"{image_key(image['file_name'])}.npz") as data:
            assert data["vertex"].shape == (image["height"], image["width"])
            assert np.all(data["mask_weight"][1:5, 1:5] == 0)  # the ignore region: neither person nor background
            assert data["mask_weight"].mean() > 0.5
    labelled = {a["image_id"] for a in docs["train"]["annotations"] if "dp_x" in a}
    assert labelled and labelled == {i["id"] for i in docs["train"]["images"] if i["is_labeled"]}
    metrics = work.metrics("pseudo_gt")
    assert metrics["people"] > 0 and not any(k.startswith("pseudo_gt/") for k in metrics)  # no dense truth to score


def test_finetune_and_evaluate_report_the_real_sets(real) -> None:
    work, docs = real
    assert "bodymap/coco_val/gpsm_ap" in work.metrics("finetune")
    evaluated = work.metrics("evaluate")
    for model in ("bodymap", "cse"):
        assert f"{model}/coco_val/gps_ap" in evaluated and f"{model}/coco_test/gpsm_ap" in evaluated
    assert not any("coco_val_dense" in k or "coco_test_dense" in k for k in evaluated)  # real sets: sparse only
    # BodyMap ran on each photo letterboxed to the training size, and its maps came back at the photo's own size
    for image in docs["val"]["images"]:
        with np.load(
            work.root / "evaluation/predictions/bodymap/coco_val" / f"{image_key(image['file_name'])}.npz"
        ) as d:
            assert d["vertex"].shape == (image["height"], image["width"])


def test_a_real_format_file_on_the_anny_template_fails_with_one_clear_error(real, template_dir, rendered, capsys):
    work, _ = real
    code = work.run("pseudo_gt", "--template", str(template_dir), "--render", str(rendered),
                    "--cse", str(work.root / "cse"), "--out", str(work.root / "refused"))  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith(f"bodymap pseudo_gt: error: {work.root / 'posetrack_train.json'}: ")
    assert "record annotation id" in last and "field 'dp_I/dp_U/dp_V'" in last and "template.source: densepose" in last
    assert not (work.root / "refused").exists()  # nothing half-written
