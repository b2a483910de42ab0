"""Pixel-window accuracy, geodesic cm accuracy, per-part breakdowns and temporal consistency on constructed inputs
with known answers, and agreement with the loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from eval_toys import neighbour_table, noisy, random_scenes

from bodymap.densepose import PART_GROUPS
from bodymap.eval import reference
from bodymap.eval.accuracy import PointAccumulator, VertexBalls, window_distance
from bodymap.eval.temporal import temporal_consistency, temporal_metrics
from bodymap.eval.toydata import ToyPeople


@pytest.fixture(scope="module")
def people(template):
    return ToyPeople(template, resolution=160)


def _vertex_in(template, group: str, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(np.isin(template.chart, PART_GROUPS[group]))))


def _at_distance(template, v: int, lo: float, hi: float) -> int:
    """A vertex whose geodesic distance from v lies in [lo, hi] metres."""
    d = template.geodesics.rows(np.array([v]))[0]
    return int(np.flatnonzero((d >= lo) & (d <= hi))[0])


def test_window_and_cm_accuracy_on_a_constructed_image(template):
    """Five GT points, each in its own part group, on a 100 x 120 image where every pixel predicts a far vertex f,
    except: pixel p_i + offset_i predicts v_i exactly (offsets 0, 5 (3-4-5), 8, 15, 30 px) and pixel p_i predicts a
    vertex u_i at 0, ~3, ~7, ~15 cm from v_i, or background."""
    rng = np.random.default_rng(0)
    groups = ["hands", "head", "torso", "legs", "arms"]
    v = np.array([_vertex_in(template, g, rng) for g in groups])
    far = _vertex_in(template, "feet", rng)
    assert np.all(template.geodesics.pair(v, far) > 0.3)
    x = np.array([10, 40, 70, 20, 60])
    y = np.array([10, 10, 10, 60, 40])
    offsets = [(0, 0), (3, 4), (8, 0), (9, 12), (30, 0)]
    pred = np.full((100, 120), far, np.int32)
    u = [v[0], _at_distance(template, v[1], 0.025, 0.035), _at_distance(template, v[2], 0.06, 0.08)]
    u += [_at_distance(template, v[3], 0.14, 0.16), -1]
    for i, (dx, dy) in enumerate(offsets):
        pred[y[i], x[i]] = u[i]
        pred[y[i] + dy, x[i] + dx] = v[i]
    chart = template.chart[v]

    epsilon = template.mean_edge_length
    acc = PointAccumulator(template.geodesics, epsilon_m=epsilon, windows_px=(5, 10, 20), cm=(5, 10, 20))
    acc.add(x, y, v.astype(np.int32), chart, pred)
    m = acc.metrics()
    assert (m["window_5px"], m["window_10px"], m["window_20px"]) == pytest.approx((40.0, 60.0, 80.0))
    assert (m["cm_5"], m["cm_10"], m["cm_20"]) == pytest.approx((40.0, 60.0, 80.0))
    assert m["window_5px_hands"] == 100.0 and m["window_5px_head"] == 100.0 and m["window_5px_torso"] == 0.0
    assert m["window_20px_legs"] == 100.0 and m["window_20px_arms"] == 0.0
    assert m["cm_5_head"] == 100.0 and m["cm_5_torso"] == 0.0 and m["cm_10_torso"] == 100.0
    assert m["window_10px_feet"] is None and m["cm_10_feet"] is None  # no point there

    np.testing.assert_array_equal(
        window_distance(x, y, v, pred, VertexBalls(template.geodesics, template.mean_edge_length), 20.0),
        [0.0, 5.0, 8.0, 15.0, np.inf],
    )
    errors, windows, _ = reference.point_metrics(
        [(x, y, v, chart, pred)], template.geodesics, epsilon_m=template.mean_edge_length, windows_px=(5, 10, 20),
        cm=(5, 10, 20),
    )  # fmt: skip
    assert windows == [0.0, 5.0, 8.0, 15.0, np.inf]
    assert errors[0] == 0.0 and errors[-1] == np.inf


def test_a_shifted_dense_prediction_is_right_within_the_shift(people, template):
    scene = people.scene((140, 140), [("front", 110, 30, 15)])
    y, x = np.nonzero(scene.vertex >= 0)
    v = scene.vertex[y, x]
    balls = VertexBalls(template.geodesics, template.mean_edge_length)
    for shift, inside in ((3, (5, 10, 20)), (7, (10, 20))):
        pred = np.roll(scene.vertex, shift, axis=1)  # the body stays inside the image
        acc = PointAccumulator(template.geodesics, epsilon_m=balls.radius, windows_px=(5, 10, 20), cm=(5,), balls=balls)
        acc.add(x, y, v, template.chart[v], pred)
        m = acc.metrics()
        for w in inside:
            assert m[f"window_{w}px"] == 100.0
        assert m["cm_5"] < 100.0
    # the perfect prediction is perfect at every radius
    acc = PointAccumulator(template.geodesics, epsilon_m=balls.radius, windows_px=(5,), cm=(5,), balls=balls)
    acc.add(x, y, v, template.chart[v], scene.vertex)
    assert acc.metrics()["window_5px"] == 100.0 and acc.metrics()["cm_5"] == 100.0


def _farthest_from(template, vertices: np.ndarray) -> int:
    """The vertex farthest (geodesically) from every vertex in `vertices`."""
    nearest = np.full(template.num_vertices, np.inf)
    for start in range(0, len(vertices), 512):
        nearest = np.minimum(nearest, template.geodesics.rows(vertices[start : start + 512]).min(axis=0))
    return int(np.argmax(nearest))


def _walk(people, frames: int, step: int) -> list:
    """One person walking right `step` px per frame, always fully in view."""
    return [people.scene((120, 160), [("front", 100, 10 + step * t, 10)]) for t in range(frames)]


def test_temporal_consistency_known_answers(people, template):
    scenes = _walk(people, 6, 2)
    far = _farthest_from(template, np.unique(scenes[0].vertex[scenes[0].vertex >= 0]))

    def run(preds, intervals=(1, 2, 9)):
        frames = [(s.vertex, s.person, p) for s, p in zip(scenes, preds, strict=True)]
        counts = temporal_consistency({"seq": 6}, lambda _, t: frames[t], intervals=intervals,
                                      geodesics=template.geodesics, tau_m=0.05)  # fmt: skip
        return temporal_metrics(counts), counts

    perfect, counts = run([s.vertex for s in scenes])
    assert perfect == {"temporal_k1": 100.0, "temporal_k2": 100.0, "temporal_k9": None}  # no pair 9 frames apart
    visible = counts[1][1]
    assert visible == 5 * np.sum(scenes[0].vertex >= 0)  # every pixel stays visible in a pure translation
    # Odd frames predict one far vertex everywhere: every 1-apart pair has an odd frame (0 %); 2 apart, the
    # even-even pairs (0,2), (2,4) match and the odd-odd pairs (1,3), (3,5) predict the same vertex twice (match).
    broken = [s.vertex if t % 2 == 0 else np.where(s.vertex >= 0, far, -1) for t, s in enumerate(scenes)]
    metrics, _ = run(broken)
    assert metrics["temporal_k1"] == 0.0 and metrics["temporal_k2"] == 100.0
    # ...unless the odd frames predict background: then only the even pairs match.
    holes = [s.vertex if t % 2 == 0 else np.full(s.shape, -1) for t, s in enumerate(scenes)]
    assert run(holes)[0]["temporal_k2"] == 50.0
    # A constant prediction is "consistent" as long as it is foreground: the metric measures stability only.
    frames = [(s.vertex, s.person, p) for s, p in zip(scenes, broken, strict=True)]
    assert reference.temporal(frames, 1, template.geodesics, 0.05) == (0, visible)


def test_point_and_temporal_metrics_equal_the_loop_reference(people, template):
    rng = np.random.default_rng(3)
    table = neighbour_table(template, k=25, seed=1)
    scenes = random_scenes(people, 4, rng, shape=(96, 120))
    epsilon = template.mean_edge_length
    acc = PointAccumulator(template.geodesics, epsilon_m=epsilon, windows_px=(2, 5, 10), cm=(2, 5, 10))
    images = []
    for scene in scenes:
        pred = noisy(scene.vertex, table, rng, drop=0.2)
        y, x = np.nonzero(scene.vertex >= 0)
        v = scene.vertex[y, x]
        acc.add(x, y, v, template.chart[v], pred)
        images.append((x, y, v, template.chart[v], pred))
    errors, windows, charts = reference.point_metrics(
        images, template.geodesics, epsilon_m=epsilon, windows_px=(2, 5, 10), cm=(2, 5, 10)
    )
    np.testing.assert_array_equal(np.concatenate(acc.window), windows)
    np.testing.assert_allclose(np.concatenate(acc.errors), errors)
    m = acc.metrics()
    assert m["window_5px"] == pytest.approx(100 * np.mean(np.array(windows) <= 5))
    assert m["cm_5_hands"] == pytest.approx(100 * np.mean(np.array(errors)[np.isin(charts, (3, 4))] <= 0.05))
    assert 10 < m["window_2px"] < 95 and 10 < m["cm_5"] < 95  # non-trivial

    walk = _walk(people, 5, 3)
    preds = [noisy(s.vertex, table, rng, drop=0.1) for s in walk]
    frames = [(s.vertex, s.person, p) for s, p in zip(walk, preds, strict=True)]
    counts = temporal_consistency({"s": 5}, lambda _, t: frames[t], intervals=(1, 3), geodesics=template.geodesics,
                                  tau_m=0.05)  # fmt: skip
    for k in (1, 3):
        assert counts[k] == reference.temporal(frames, k, template.geodesics, 0.05)
    assert 0 < counts[1][0] < counts[1][1]
