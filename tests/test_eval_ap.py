"""DensePose AP / AR (GPS, GPSm, mask IoU): perfect predictions, the GPS formula, matching and ignore rules, and
agreement with the literal loop implementation (`tests/eval_reference.py`)."""

from __future__ import annotations

import copy

import eval_reference as reference
import numpy as np
import pytest
from eval_toys import (
    instance_of,
    instances,
    load,
    neighbour_table,
    noisy,
    random_detections,
    random_scenes,
    write_dense_predictions,
)

from bodymap.config import EvaluateParams
from bodymap.eval import evaluate_set, load_ground_truth
from bodymap.eval.densepose_ap import MODES, THRESHOLDS, evaluate_ap, gps_matrices, match, similarities
from bodymap.eval.evaluate import gt_box_detections
from bodymap.eval.groundtruth import KAPPA
from bodymap.eval.predictions import PredictionSet, dense_to_instances
from bodymap.eval.toydata import ToyPeople, annotate, coco_document, write_split


@pytest.fixture(scope="module")
def people(template):
    return ToyPeople(template, resolution=160)


def _doc(template, scenes, points=50, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id, scene in enumerate(scenes, start=1):
        height, width = scene.shape
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": height, "width": width})
        anns += annotate(scene, template, image_id=image_id, first_id=len(anns) + 1, points=points, rng=rng)
    return coco_document(images, anns)


def test_perfect_predictions_give_100_in_every_mode(people, template, tmp_path):
    scenes = [
        people.scene((160, 240), [("front", 120, 5, 10), ("back", 70, 120, 30), ("front", 140, 170, 5)]),
        people.scene((300, 200), [("back", 290, 30, 5)]),  # large (area > 96^2)
    ]
    coco = load(tmp_path, template, _doc(template, scenes))
    dets = [instances([(*instance_of(s, k)[:1], 0.9, instance_of(s, k)[1]) for k in range(3) if (s.person == k).any()])
            for s in scenes]  # fmt: skip
    metrics = evaluate_ap(coco, dets, template.geodesics).metrics()
    for mode in MODES:
        for key in ("ap", "ap50", "ap75", "ar", "ar50", "ar75", "apm", "arm", "apl", "arl"):
            assert metrics[f"{mode}_{key}"] == pytest.approx(100.0), f"{mode}_{key}"


def test_gps_of_a_known_geodesic_offset_follows_the_formula(people, template, tmp_path):
    scene = people.scene((150, 120), [("front", 140, 20, 5)])
    doc = _doc(template, [scene], points=80)
    coco = load(tmp_path, template, doc)
    # Move every predicted vertex to a fixed neighbour ~2-6 cm away on the body.
    table = neighbour_table(template, k=40, seed=3)
    box, grid = instance_of(scene, 0, np.where(scene.vertex >= 0, table[np.maximum(scene.vertex, 0)], -1))
    gps = gps_matrices(coco, [instances([(box, 1.0, grid)])], template.geodesics)[0][0, 0]

    ann = doc["annotations"][0]
    gt_vertex = np.array(ann["dp_vertex"])
    dist = template.geodesics.pair(gt_vertex, table[gt_vertex]).astype(np.float64)
    kappa = KAPPA[np.array(ann["dp_I"], int)]
    expected = np.mean(np.exp(-(dist**2) / (2 * kappa**2)))
    assert 0.3 < expected < 0.99  # a real offset, not a trivial case
    assert gps == pytest.approx(expected, rel=1e-9)
    # One GT, one detection: it counts at the thresholds <= GPS, a false positive above.
    ap = evaluate_ap(coco, [instances([(box, 1.0, grid)])], template.geodesics).metrics()
    assert ap["gps_ap"] == pytest.approx(100.0 * np.mean(expected >= THRESHOLDS))
    assert ap["gps_ar50"] == 100.0

    # Without dp_I every point uses kappa = 0.255.
    for key in ("dp_I", "dp_U", "dp_V"):
        del ann[key]
    coco = load(tmp_path, template, doc, "no_dp_i.json")
    gps = gps_matrices(coco, [instances([(box, 1.0, grid)])], template.geodesics)[0][0, 0]
    assert gps == pytest.approx(np.mean(np.exp(-(dist**2) / (2 * 0.255**2))), rel=1e-9)


def test_points_on_predicted_background_or_outside_the_box_score_zero(people, template, tmp_path):
    scene = people.scene((150, 120), [("front", 140, 20, 5)])
    doc = _doc(template, [scene], points=50)
    coco = load(tmp_path, template, doc)
    box, grid = instance_of(scene, 0)
    x, y = coco.point_pixels
    # Predict background at the first point's pixel (every other point keeps its exact vertex).
    holes = grid.copy()
    holes[y[0] - int(box[1]), x[0] - int(box[0])] = -1
    same_pixel = (x == x[0]) & (y == y[0])
    gps = gps_matrices(coco, [instances([(box, 1.0, holes)])], template.geodesics)[0][0, 0]
    assert gps == pytest.approx(1.0 - same_pixel.sum() / 50)
    # A box that stops short of the rightmost points: they count 0 (the mean still has 50 terms).
    cut = x.max() - 3
    narrow = box.copy()
    narrow[2] = cut - box[0]
    gps = gps_matrices(coco, [instances([(narrow, 1.0, grid[:, : int(narrow[2])])])], template.geodesics)[0][0, 0]
    assert gps == pytest.approx(np.mean(x < cut))


def test_hand_worked_two_images_matching_ignore_rules_and_the_box_iou_pass(people, template, tmp_path):
    """Image 1: A and D annotated, B without dp_x (ignored). Image 2: C without dp_x (all GTs ignored).

    Detections by score: d4 0.99 on C (image 2: all ignored -> ignored), d3 0.95 exactly on B (no GPS with an ignored
    GT; the 0.8 box-IoU pass ties it to B -> ignored), d1 0.9 exactly on A (true positive), d2 0.8 = d1 again
    (A is taken: false positive). D is missed. So positives = 2 (A, D), and in score order: ignored, ignored, TP, FP:
    precision 1 up to recall 0.5, i.e. AP = 51/101 (recall points 0, .01, ..., .50), AR = 50 at every threshold.
    Give B and C a point each (far from every detection) and the rules no longer apply: d4 and d3 are false positives
    ahead of the TP and there are 4 positives, so precision 1/3 up to recall 0.25: AP = 26/101/3.
    """
    one = people.scene((110, 260), [("front", 90, 5, 10), ("back", 90, 90, 10), ("front", 90, 180, 10)])
    two = people.scene((110, 100), [("back", 90, 20, 10)])
    doc = _doc(template, [one, two], points=40)
    anns = {(a["image_id"], round(a["bbox"][0] / 80)): a for a in doc["annotations"]}
    for key in ((1, 1), (2, 0)):  # B and C lose their DensePose points
        for field in [f for f in anns[key] if f.startswith("dp_")]:
            del anns[key][field]
    coco = load(tmp_path, template, doc)
    assert coco.ignore.tolist() == [False, True, False, True]
    assert all(32**2 <= a <= 96**2 for a in coco.areas)  # all medium

    a, b, c = instance_of(one, 0), instance_of(one, 1), instance_of(two, 0)
    dets = [
        instances([(a[0], 0.9, a[1]), (a[0], 0.8, a[1]), (b[0], 0.95, b[1])]).ranked(20),
        instances([(c[0], 0.99, c[1])]).ranked(20),
    ]
    sims = similarities(coco, dets, template.geodesics)
    matches = match(coco, dets, sims)
    gps_all = matches["gps", "all"]
    # detections in image order, then score order: d3 (B), d1 (A), d2 (A again) | d4 (C)
    assert gps_all.scores.tolist() == [0.95, 0.9, 0.8, 0.99]
    assert gps_all.ignored.all(axis=0).tolist() == [True, False, False, True]
    assert gps_all.matched[:-1].any(axis=0).tolist() == [False, True, False, False]
    # the 0.8 pass ties d3 to B and d4 to C (box IoU 1): matched to an ignored GT at the last threshold
    assert gps_all.matched[-1].tolist() == [True, True, False, True]
    assert gps_all.positives == 2

    metrics = evaluate_ap(coco, dets, template.geodesics).metrics()
    for mode in MODES:
        assert metrics[f"{mode}_ap"] == pytest.approx(100 * 51 / 101)
        assert metrics[f"{mode}_ap50"] == pytest.approx(100 * 51 / 101)
        assert metrics[f"{mode}_ar"] == pytest.approx(50.0)
        assert metrics[f"{mode}_apm"] == pytest.approx(100 * 51 / 101)
        assert metrics[f"{mode}_apl"] is None  # no large GT: undefined, like COCO's -1
    assert metrics == reference.densepose_ap(coco, dets, template.geodesics)

    # Take the rules away and the same detections cost precision: B and C get points far from any detection.
    no_rules = copy.deepcopy(doc)
    for ann in no_rules["annotations"]:
        if "dp_x" not in ann:
            ann.update(dp_x=[0.0], dp_y=[0.0], dp_vertex=[0], ref_model=template.name)
            ann["bbox"] = [0.0, 0.0, 1.0, 1.0]
    coco2 = load(tmp_path, template, no_rules, "no_rules.json")
    gps_ap = evaluate_ap(coco2, dets, template.geodesics).metrics()["gps_ap"]
    assert gps_ap == pytest.approx(100 * 26 / 101 / 3)


def test_vectorised_ap_equals_the_loop_reference(people, template, tmp_path):
    rng = np.random.default_rng(7)
    scenes = random_scenes(people, 12, rng)
    doc = _doc(template, scenes, points=30, seed=1)
    doc["annotations"][1]["iscrowd"] = 1
    for ann in doc["annotations"][2::5]:
        for field in [f for f in ann if f.startswith("dp_")]:
            del ann[field]
    coco = load(tmp_path, template, doc)
    table = neighbour_table(template, k=20, seed=0)
    dets = [random_detections(s, noisy(s.vertex, table, rng), rng).ranked(20) for s in scenes]
    dets[3] = instances([])
    got = evaluate_ap(coco, dets, template.geodesics)
    want = reference.densepose_ap(coco, dets, template.geodesics)
    assert got.metrics().keys() == want.keys()
    for key, value in want.items():
        assert got.metrics()[key] == pytest.approx(value, abs=1e-9), key
    for i, table_ in enumerate(reference.gps(coco, dets, template.geodesics)):
        np.testing.assert_allclose(got.sims.gps[i], table_, atol=1e-12)
    assert 5 < got.metrics()["gps_ap"] < 95  # a non-trivial case


def test_gt_box_ap_measures_correspondences_apart_from_instance_splitting(people, template, tmp_path):
    """Two overlapping people predicted perfectly as one whole-image map: connected components merge them into one
    detection (end-to-end AP far from 100), while given the GT boxes every point is right (GPS AP 100). The mask in
    a GT box also holds the other person's pixels, so GPSm given the boxes stays under 100."""
    scene = people.scene((170, 150), [("front", 150, 10, 10), ("back", 150, 50, 15)])
    coco = load(tmp_path, template, _doc(template, [scene], points=60))
    score = np.where(scene.vertex >= 0, 0.9, 0.0).astype(np.float32)
    merged = dense_to_instances(scene.vertex, None, score).ranked(20)
    assert len(merged) == 1
    end_to_end = evaluate_ap(coco, [merged], template.geodesics).metrics()
    given = evaluate_ap(coco, [gt_box_detections(coco, 0, scene.vertex, score)], template.geodesics).metrics()
    assert end_to_end["gps_ap"] < 60.0
    assert given["gps_ap"] == pytest.approx(100.0)
    assert end_to_end["gpsm_ap"] < given["gpsm_ap"] < 100.0


def test_kappa_switch_uses_one_global_kappa(people, template, tmp_path):
    scene = people.scene((150, 120), [("front", 140, 20, 5)])
    write_split(tmp_path / "split", [scene], template, points=80)
    table = neighbour_table(template, k=40, seed=3)
    pred = np.where(scene.vertex >= 0, table[np.maximum(scene.vertex, 0)], -1)
    predictions = write_dense_predictions(tmp_path / "pred", template, [pred])
    gt = load_ground_truth("coco", tmp_path / "split" / "annotations.json", template=template)
    sets = PredictionSet.open(predictions, num_vertices=template.num_vertices, template_name=template.name)
    per_part, global_kappa = (
        evaluate_set(ground_truth=gt, predictions=sets, template=template, settings=EvaluateParams(kappa=k))
        for k in ("per_part", "global")
    )
    v = gt.coco.vertex
    dist = template.geodesics.pair(v, pred[gt.coco.point_pixels[1], gt.coco.point_pixels[0]]).astype(np.float64)
    gps = []
    for result, kappa in ((per_part, gt.coco.kappa), (global_kappa, 0.255)):
        expected = np.mean(np.exp(-(dist**2) / (2 * np.asarray(kappa) ** 2)))
        gps.append(result.ap.sims.gps[0][0, 0])
        assert gps[-1] == pytest.approx(expected, rel=1e-9)
    assert abs(gps[0] - gps[1]) > 1e-3
