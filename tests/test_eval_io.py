"""The prediction format, dense predictions as instances, GT reading, error messages for malformed files, and the
`bodymap evaluate` command end to end (several sets, two models, one report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from eval_toys import neighbour_table, noisy, write_dense_predictions

from bodymap import cli
from bodymap.config import EvaluateParams
from bodymap.errors import BodymapError
from bodymap.eval import (
    PredictionSet,
    PredictionWriter,
    dense_to_instances,
    evaluate_set,
    load_ground_truth,
    read_coco,
)
from bodymap.eval.predictions import paste_instances
from bodymap.eval.toydata import ToyPeople, write_split, write_video
from bodymap.io import save_npz, write_json


@pytest.fixture(scope="module")
def people(template):
    return ToyPeople(template, resolution=128)


@pytest.fixture(scope="module")
def split(people, template, tmp_path_factory):
    """A dense split of three images (two with two people, apart), with annotations.json."""
    root = tmp_path_factory.mktemp("split")
    scenes = [
        people.scene((100, 140), [("front", 80, 5, 10), ("back", 60, 80, 30)]),
        people.scene((100, 140), [("back", 90, 40, 5)]),
        people.scene((100, 140), [("front", 50, 10, 40), ("front", 70, 90, 20)]),
    ]
    write_split(root, scenes, template, points=40)
    return root, scenes


def test_dense_predictions_become_instances_by_person_or_components(split):
    _, scenes = split
    scene = scenes[0]
    score = np.where(scene.person == 0, 0.9, 0.6).astype(np.float32)
    by_person = dense_to_instances(scene.vertex, scene.person, score)
    by_components = dense_to_instances(scene.vertex, None, score)
    for inst in (by_person, by_components):
        assert len(inst) == 2
        ys, xs = np.nonzero(scene.person == 0)
        np.testing.assert_array_equal(inst.boxes[0], [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1])
        assert inst.scores[0] == pytest.approx(0.9) and inst.scores[1] == pytest.approx(0.6)
        np.testing.assert_array_equal(paste_instances(inst, scene.shape), scene.vertex)
    # specks under min_pixels are dropped
    speck = scene.vertex.copy()
    speck[0, 0] = 5
    assert len(dense_to_instances(speck, None, None, min_pixels=4)) == 2
    assert len(dense_to_instances(speck, None, None, min_pixels=0)) == 3


def test_prediction_writer_round_trip(tmp_path, template, split):
    _, scenes = split
    scene = scenes[0]
    inst = dense_to_instances(scene.vertex, scene.person, None)
    writer = PredictionWriter(tmp_path, template_name=template.name, kind="instances")
    writer.add_instances(1, inst.boxes, inst.scores, list(inst.maps))
    writer.close()
    preds = PredictionSet.open(tmp_path, num_vertices=template.num_vertices, template_name=template.name)
    view = preds.read(preds.by_id[1], scene.shape, max_detections=20, min_pixels=0)
    np.testing.assert_array_equal(view.vertex, scene.vertex)
    np.testing.assert_array_equal(view.ranked.boxes, inst.boxes)
    np.testing.assert_array_equal(view.score, np.where(scene.vertex >= 0, 1.0, 0.0))  # instances scored 1.0


def _error(call) -> str:
    with pytest.raises(BodymapError) as info:
        call()
    return str(info.value)


def test_malformed_predictions_name_file_record_and_field(tmp_path, template, split):
    root, scenes = split
    gt = load_ground_truth("dense", root, template=template)
    settings = EvaluateParams(visualisations=0)

    def evaluate(directory):
        preds = PredictionSet.open(directory, num_vertices=template.num_vertices, template_name=template.name)
        return evaluate_set(ground_truth=gt, predictions=preds, template=template, settings=settings)

    # missing field: an npz without `vertex`
    bad = tmp_path / "missing"
    write_dense_predictions(bad, template, [s.vertex for s in scenes])
    save_npz(bad / "000002.npz", person=scenes[1].person)
    message = _error(lambda: evaluate(bad))
    assert str(bad / "000002.npz") in message and "image_id 2" in message and "'vertex'" in message
    assert "missing" in message

    # wrong shape: a dense map of the wrong size, an instance grid that does not fit its box
    bad = tmp_path / "shape"
    write_dense_predictions(bad, template, [s.vertex[:, :-1] if i == 2 else s.vertex for i, s in enumerate(scenes)])
    message = _error(lambda: evaluate(bad))
    assert "000003.npz" in message and "image_id 3" in message and "'vertex'" in message and "[100, 140]" in message
    bad = tmp_path / "grid"
    writer = PredictionWriter(bad, template_name=template.name, kind="instances")
    writer.add_instances(1, np.array([[2.0, 3.0, 10.7, 20.2]]), np.array([0.5]), [np.zeros((20, 11), np.int32)])
    writer.close()
    preds = PredictionSet.open(bad, num_vertices=template.num_vertices, template_name=template.name)
    message = _error(lambda: preds.instances(preds.by_id[1]))
    assert "000001.npz" in message and "image_id 1" in message and "'vertex_0'" in message and "[20, 10]" in message

    # unknown image id, and vertex ids beyond the template
    bad = tmp_path / "unknown"
    write_dense_predictions(bad, template, [s.vertex for s in scenes])
    index = json.loads((bad / "predictions.json").read_text())
    index["images"][1]["image_id"] = 99
    write_json(bad / "predictions.json", index)
    message = _error(lambda: evaluate(bad))
    assert str(bad / "predictions.json") in message and "images[1]" in message and "'image_id'" in message
    assert "unknown image id 99" in message
    bad = tmp_path / "range"
    write_dense_predictions(bad, template, [np.full(s.shape, template.num_vertices) for s in scenes])
    assert "vertex ids must be -1 or in [0," in _error(lambda: evaluate(bad))

    # index problems: missing field, another template
    bad = tmp_path / "index"
    bad.mkdir()
    write_json(bad / "predictions.json", {"template": template.name, "kind": "dense", "images": [{"file": "a.npz"}]})
    message = _error(lambda: evaluate(bad))
    assert "predictions.json" in message and "images[0]" in message and "'image_id'" in message
    write_json(bad / "predictions.json", {"template": "smpl", "kind": "dense", "images": []})
    assert "'template'" in _error(lambda: evaluate(bad))


def test_malformed_annotations_name_file_record_and_field(tmp_path, template, split):
    root, _ = split
    doc = json.loads((root / "annotations.json").read_text())

    def read(change) -> str:
        bad = json.loads(json.dumps(doc))
        change(bad)
        path = tmp_path / "bad.json"
        write_json(path, bad)
        return _error(lambda: read_coco(path, template))

    ann_id = doc["annotations"][0]["id"]
    message = read(lambda d: d["annotations"][0].pop("bbox"))
    assert "bad.json" in message and f"annotation id {ann_id}" in message and "'bbox'" in message
    assert "missing" in message
    message = read(lambda d: d["annotations"][0].update(dp_y=[1.0, 2.0]))
    assert f"annotation id {ann_id}" in message and "'dp_y'" in message and "expected 40 values" in message
    message = read(lambda d: d["annotations"][0].update(image_id=77))
    assert "'image_id'" in message and "unknown image id 77" in message
    message = read(lambda d: d["annotations"][0].update(dp_vertex=[-3] * 40))
    assert "'dp_vertex'" in message
    message = read(lambda d: d["images"][0].pop("height"))
    assert "images[0]" in message and "'height'" in message
    # dp_vertex of another mesh: refused (never re-read through dp_I/U/V on the wrong atlas), with or without IUV
    message = read(lambda d: d["annotations"][0].update(ref_model="smpl_27554"))
    assert f"annotation id {ann_id}" in message and "'ref_model'" in message and "'smpl_27554'" in message
    message = read(lambda d: [d["annotations"][0].update(ref_model="smpl"), d["annotations"][0].pop("dp_I")])
    assert "'ref_model'" in message
    # dense GT without its vertex map
    bad = tmp_path / "dense"
    save_npz(bad / "gt" / "000001.npz", person=np.zeros((4, 4), np.int16))
    message = _error(lambda: load_ground_truth("dense", bad, template=template).dense.load("000001"))
    assert "000001.npz" in message and "'vertex'" in message


def test_iuv_annotations_give_the_same_points_as_dp_vertex(tmp_path, template, split):
    root, _ = split
    doc = json.loads((root / "annotations.json").read_text())
    with_vertex = read_coco(root / "annotations.json", template)
    for ann in doc["annotations"]:
        ann.pop("dp_vertex")
    write_json(tmp_path / "iuv.json", doc)
    via_iuv = read_coco(tmp_path / "iuv.json", template)
    # nearest (U, V) in the chart finds the vertex itself unless another vertex shares its UV
    same = via_iuv.vertex == with_vertex.vertex
    assert same.mean() > 0.95
    assert np.all(template.geodesics.pair(via_iuv.vertex[~same], with_vertex.vertex[~same]) < 0.1)


def test_bodymap_evaluate_command_compares_models_on_several_sets(tmp_path, template, template_dir, split, people):
    root, scenes = split
    perfect = write_dense_predictions(tmp_path / "perfect", template, [s.vertex for s in scenes],
                                      [s.person for s in scenes])  # fmt: skip
    rng = np.random.default_rng(0)
    table = neighbour_table(template, k=30, seed=0)
    rough = write_dense_predictions(tmp_path / "rough", template, [noisy(s.vertex, table, rng) for s in scenes])
    video = tmp_path / "video"
    frames = [[people.scene((80, 100), [("front", 60, 5 + 3 * t, 5)]) for t in range(5)] for _ in range(2)]
    write_video(video, frames)
    writer = PredictionWriter(tmp_path / "video_pred", template_name=template.name, kind="dense")
    for s, seq in enumerate(frames):
        for t, scene in enumerate(seq):
            writer.add_dense(s * 100 + t, scene.vertex, name=f"{s:03d}/{t:04d}")
    writer.close()
    out, metrics_file = tmp_path / "report", tmp_path / "metrics" / "evaluate.json"
    code = cli.main([
        "evaluate", "--template", str(template_dir), "--out", str(out), "--metrics", str(metrics_file),
        "--eval", "bodymap/synthetic", "dense", str(root), str(perfect),
        "--eval", "cse/synthetic", "dense", str(root), str(rough),
        "--eval", "bodymap/coco", "coco", str(root / "annotations.json"), str(perfect),
        "--eval", "bodymap/video", "video", str(video), str(tmp_path / "video_pred"),
        "--set", "evaluate.visualisations=1", "--set", "evaluate.temporal_intervals=[1, 3, 12]",
    ])  # fmt: skip
    assert code == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics == json.loads((out / "metrics.json").read_text())
    for key in ("gps_ap", "gpsm_ap", "iou_ap", "gpsm_ap50", "iou_arl", "window_10px", "cm_10", "window_10px_hands"):
        assert f"bodymap/synthetic/{key}" in metrics
    for key in ("gps_ap", "gpsm_ap", "iou_ap", "gtbox_gps_ap", "gtbox_iou_ap", "window_5px", "window_20px", "cm_5"):
        assert metrics[f"bodymap/synthetic/{key}"] == 100.0
        assert metrics[f"cse/synthetic/{key}"] < 100.0
    for key in ("gps_ap", "gpsm_ap", "iou_ap", "gtbox_gps_ap", "cm_5", "cm_20"):
        assert metrics[f"bodymap/coco/{key}"] == 100.0
    assert metrics["bodymap/coco/window_10px"] is None  # sparse points only: no window figure
    assert metrics["bodymap/synthetic/window_scaled_5px"] == 100.0
    assert metrics["bodymap/video/temporal_k1"] == 100.0 and metrics["bodymap/video/temporal_k3"] == 100.0
    assert metrics["bodymap/video/temporal_k12"] is None  # 5 frames: no pair 12 apart
    assert metrics["bodymap/synthetic/points"] > metrics["bodymap/coco/points"]  # dense vs 40 points per person
    for name in ("bodymap/synthetic", "cse/synthetic", "bodymap/coco"):
        assert (out / name / "pr_gpsm.csv").read_text().startswith("recall,precision_50,precision_75,precision_mean")
        assert (out / name / "pr.png").exists()
        assert len(list((out / name / "vis").glob("*.png"))) == 1
    assert len(list((out / "bodymap/video/vis").glob("*.png"))) == 1
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["params"]["visualisations"] == 1 and len(run["eval_sets"]) == 4

    # a bad spec is a one-line error, and nothing is left half-written
    code = cli.main(["evaluate", "--template", str(template_dir), "--out", str(tmp_path / "x"),
                     "--eval", "a", "nope", str(root), str(perfect)])  # fmt: skip
    assert code == 2 and not (tmp_path / "x").exists()
