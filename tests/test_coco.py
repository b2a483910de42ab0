"""DensePose-COCO reading: every malformed record is one message naming file, annotation and field; IUV points
convert to the vertices they were made from."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bodymap.data.coco import read_coco, video_frames
from bodymap.errors import BodymapError


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _document(template, n: int = 20, seed: int = 0) -> dict:
    """One image, one annotated person whose points come from the template's own charts."""
    rng = np.random.default_rng(seed)
    vertex = rng.choice(template.num_vertices, n, replace=False)
    grid = np.zeros((256, 256), np.uint8)
    grid[40:200, 60:180] = 1
    ann = {
        "id": 7,
        "image_id": 1,
        "category_id": 1,
        "bbox": [10.0, 20.0, 50.0, 80.0],
        "area": 4000.0,
        "iscrowd": 0,
        "segmentation": _rle(np.pad(np.ones((80, 50), np.uint8), ((20, 28), (10, 20)))),
        "dp_x": rng.uniform(0, 255, n).tolist(),
        "dp_y": rng.uniform(0, 255, n).tolist(),
        "ref_model": template.name,  # the points are on this template's own charts
        "dp_I": template.chart[vertex].astype(int).tolist(),
        "dp_U": template.uv[vertex, 0].astype(float).tolist(),
        "dp_V": template.uv[vertex, 1].astype(float).tolist(),
        "dp_masks": [_rle(grid)] + [[] for _ in range(13)],
    }
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 128, "width": 80}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "person"}],
        "_vertex": vertex.tolist(),
    }


def _write(tmp_path, doc: dict):
    path = tmp_path / "dp.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if not k.startswith("_")}))
    return path


def test_iuv_points_convert_to_the_vertices_they_were_made_from(template, tmp_path):
    doc = _document(template)
    coco = read_coco(_write(tmp_path, doc), template)
    found = coco.vertex
    expected = np.array(doc["_vertex"])
    # Rare vertices share exactly the same (I, U, V); any of them is a correct answer.
    same = (found == expected) | (
        (template.chart[found] == template.chart[expected])
        & np.all(template.uv[found] == template.uv[expected], axis=1)
    )
    assert same.all() and (found == expected).mean() > 0.9
    assert coco.num_points == 20 and not coco.ignore[0]


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda a: a.update(dp_y=a["dp_y"][:-1]), "dp_y", "expected 20 values"),
        (lambda a: a["dp_I"].__setitem__(0, 25), "dp_I", "expected chart ids 1..24"),
        (lambda a: a["dp_U"].__setitem__(3, 1.5), "dp_U", "expected values in [0, 1], got 1.5"),
        (lambda a: a["dp_V"].__setitem__(3, -0.1), "dp_V", "expected values in [0, 1]"),
        (lambda a: a["dp_x"].__setitem__(2, 300.0), "dp_x", "expected values in [0, 255], got 300"),
        (lambda a: a["dp_masks"].__setitem__(1, {"counts": "#!", "size": [256, 256]}), "dp_masks[1]", "RLE"),
        (lambda a: a.update(segmentation={"counts": [5, 5], "size": "x"}), "segmentation", "not decodable"),
        (lambda a: a.update(bbox=[1, 2, -3, 4]), "bbox", "w, h >= 0"),
        (lambda a: a.pop("dp_I"), "dp_vertex", "needs dp_vertex or dp_I, dp_U, dp_V"),
        (lambda a: a.update(image_id=99), "image_id", "unknown image id 99"),
    ],
)
def test_malformed_records_name_file_annotation_and_field(template, tmp_path, change, field, expected):
    doc = copy.deepcopy(_document(template))
    change(doc["annotations"][0])
    path = _write(tmp_path, doc)
    with pytest.raises(BodymapError) as info:
        read_coco(path, template)
    message = str(info.value)
    assert message.startswith(f"{path}: record annotation id 7: field '{field}'")
    assert expected in message and "\n" not in message


def test_missing_image_is_reported_when_an_image_folder_is_given(template, tmp_path):
    path = _write(tmp_path, _document(template))
    with pytest.raises(BodymapError, match=r"record images\[0\]: field 'file_name': image 'a.jpg' not found"):
        read_coco(path, template, images_dir=tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"")
    assert read_coco(path, template, images_dir=tmp_path).num_images == 1


def test_video_frames_read_is_labeled_one_way_and_require_frame_ids(template, tmp_path):
    doc = _document(template)
    doc["images"] = [
        {"id": 1, "file_name": "a.jpg", "height": 128, "width": 80, "vid_id": "v", "frame_id": 0},
        {"id": 2, "file_name": "b.jpg", "height": 128, "width": 80, "vid_id": "v", "frame_id": 1},
        {"id": 3, "file_name": "c.jpg", "height": 128, "width": 80, "vid_id": "v", "frame_id": 2, "is_labeled": True},
    ]
    # without is_labeled a frame is labelled when it has DensePose points (image 1), whatever reads it
    assert video_frames("v.json", doc) == {1: ("v", 0, True), 2: ("v", 1, False), 3: ("v", 2, True)}
    doc["images"][1].pop("frame_id")
    with pytest.raises(BodymapError, match=r"v.json: record images\[1\]: field 'frame_id': missing"):
        video_frames("v.json", doc)
