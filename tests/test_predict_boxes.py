"""`bodymap predict --boxes`: person by person, each crop letterboxed and predicted on its own, pasted back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bodymap import cli
from bodymap.config import CseParams
from bodymap.cse.stage import build_cse
from bodymap.errors import BodymapError
from bodymap.models.registry import create_model
from bodymap.predict import Predictor, crop_windows, read_boxes
from bodymap.registry.packaging import BodyMapPipeline


@pytest.fixture(scope="module")
def predictor(template) -> Predictor:
    """The real CSE and BodyMap networks (untrained weights: this tests the plumbing, not the accuracy)."""
    torch.manual_seed(0)
    cse, _ = build_cse(template, CseParams())
    pipeline = BodyMapPipeline(cse, create_model("bodymap_vit"), template.colors, input_size=48).eval()
    return Predictor(pipeline, template, 48)


def test_crop_windows_grow_round_outwards_and_clip():
    boxes = np.array([[10.2, 20.0, 30.0, 40.0], [-5.0, 90.0, 20.0, 30.0], [200.0, 0.0, 5.0, 5.0]])
    assert crop_windows(boxes, 100, 120, 0.1) == [(7, 16, 44, 64), (0, 87, 17, 100)]  # the third is off the photo


def test_each_person_is_predicted_on_its_own_crop_and_pasted_back(predictor, one_torch_thread):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = np.array([[30.0, 10.0, 40.0, 60.0]])
    vertex, score = predictor.in_boxes(photo, box, margin=0.1)
    (x0, y0, x1, y1) = crop_windows(box, 90, 120, 0.1)[0]
    alone_vertex, alone_score = predictor(np.ascontiguousarray(photo[y0:y1, x0:x1]))
    assert np.array_equal(vertex[y0:y1, x0:x1], alone_vertex) and np.array_equal(score[y0:y1, x0:x1], alone_score)
    outside = np.ones((90, 120), bool)
    outside[y0:y1, x0:x1] = False
    assert np.all(vertex[outside] == -1) and np.all(score[outside] == 0)
    # two overlapping people: each pixel keeps the more confident crop
    boxes = np.array([[30.0, 10.0, 40.0, 60.0], [50.0, 20.0, 40.0, 50.0]])
    vertex2, score2 = predictor.in_boxes(photo, boxes, margin=0.1)
    (a0, b0, a1, b1) = crop_windows(boxes[1:], 90, 120, 0.1)[0]
    second_vertex, second_score = predictor(np.ascontiguousarray(photo[b0:b1, a0:a1]))
    first = np.zeros((90, 120), np.float32)
    first[y0:y1, x0:x1] = alone_score
    second = np.zeros((90, 120), np.float32)
    second[b0:b1, a0:a1] = second_score
    assert np.array_equal(score2, np.maximum(first, second))
    first_v = np.full((90, 120), -1, np.int32)
    first_v[y0:y1, x0:x1] = alone_vertex
    second_v = np.full((90, 120), -1, np.int32)
    second_v[b0:b1, a0:a1] = second_vertex
    assert np.array_equal(vertex2, np.where(second > first, second_v, first_v))


def test_box_files_are_checked_and_every_photo_needs_an_entry(tmp_path):
    doc = {
        "images": [{"id": 1, "file_name": "val2014/a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(doc))
    boxes = read_boxes(path)
    assert boxes["a.jpg"].tolist() == [[1.0, 2.0, 3.0, 4.0]] and boxes["b.jpg"].shape == (0, 4)
    doc["annotations"][0]["bbox"] = [1, 2, 0, 4]
    path.write_text(json.dumps(doc))
    with pytest.raises(
        BodymapError, match=r"boxes.json: record annotation id 5: field 'bbox': expected \[x, y, w, h\]"
    ):
        read_boxes(path)
    doc["annotations"][0]["bbox"] = [1, 2, 3, 4]
    path.write_text(json.dumps(doc))
    (tmp_path / "c.jpg").write_bytes(b"")
    code = cli.main(["predict", str(tmp_path / "c.jpg"), "--model", "unused.pt", "--boxes", str(path),
                     "--out", str(tmp_path / "out"), "-q"])  # fmt: skip
    assert code == 2 and not (tmp_path / "out").exists()  # refused before loading anything
