"""Geodesic cm accuracy, pixel-window accuracy and temporal consistency: constructed inputs with known answers, the
floors every metric must pass (ground truth 100; shuffled, random and constant maps near 0; a fixed surface offset
high; a fresh offset every frame clearly lower on temporal consistency), and agreement with plain loops."""

from __future__ import annotations

import eval_reference
import numpy as np
import pytest
from eval_toys import neighbour_table, noisy
from scipy.spatial import cKDTree

from bodymap.densepose import PART_GROUPS
from bodymap.eval.accuracy import PointAccumulator, visible_surface, window_errors
from bodymap.eval.floors import floor_vertices, torso_centre_vertex
from bodymap.eval.temporal import temporal_consistency, temporal_metrics
from bodymap.eval.toydata import ToyPeople


@pytest.fixture(scope="module")
def people(template):
    return ToyPeople(template, resolution=160)


def _accumulator(template, windows=(5, 10, 20), cm=(5, 10, 20)) -> PointAccumulator:
    return PointAccumulator(
        template.geodesics, template.chart, windows_px=windows, cm=cm, min_spacing_m=template.mean_edge_length
    )


def _vertex_in(template, group: str, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(np.isin(template.chart, PART_GROUPS[group]))))


def _at_distance(template, v: int, lo: float, hi: float) -> int:
    """A vertex whose geodesic distance from v lies in [lo, hi] metres."""
    d = template.geodesics.rows(np.array([v]))[0]
    return int(np.flatnonzero((d >= lo) & (d <= hi))[0])


def _offset_table(template, distance_m: float, seed: int) -> np.ndarray:
    """[V] int: every vertex -> the vertex nearest to it moved `distance_m` along one random direction (the same for
    all): a smooth, fixed displacement of about that size on the body."""
    direction = np.random.default_rng(seed).normal(size=3)
    direction /= np.linalg.norm(direction)
    _, moved = cKDTree(template.vertices).query(template.vertices + distance_m * direction)
    return moved.astype(np.int32)


def _trivial_maps(scene, template, rng, key: str = "scene") -> dict[str, np.ndarray]:
    """The predictors every metric is checked against, on the scene's true silhouette (random ones drawn afresh
    for every key)."""
    gt = scene.vertex
    fg = gt >= 0
    shuffled = gt.copy()
    shuffled[fg] = rng.permutation(gt[fg])
    return {
        "shuffled": shuffled,
        "random": floor_vertices("random", fg, template, key),
        "constant": floor_vertices("constant", fg, template, key),
    }


def _window(template, scene, pred, windows=(5, 10, 20)) -> dict:
    acc = _accumulator(template, windows)
    acc.add_dense(scene.vertex, scene.person, pred)
    return acc.metrics()


def test_cm_accuracy_on_constructed_points(template):
    """Five GT points, each in its own part group; the prediction at each is a vertex 0, ~3, ~7 and ~15 cm away,
    or background."""
    rng = np.random.default_rng(0)
    groups = ["hands", "head", "torso", "legs", "arms"]
    v = np.array([_vertex_in(template, g, rng) for g in groups])
    x = np.array([10, 40, 70, 20, 60])
    y = np.array([10, 10, 10, 60, 40])
    pred = np.full((100, 120), -1, np.int32)
    u = [v[0], _at_distance(template, v[1], 0.025, 0.035), _at_distance(template, v[2], 0.06, 0.08)]
    u += [_at_distance(template, v[3], 0.14, 0.16), -1]
    pred[y, x] = u
    acc = _accumulator(template)
    acc.add_points(x, y, v.astype(np.int32), pred)
    m = acc.metrics()
    assert (m["cm_5"], m["cm_10"], m["cm_20"]) == pytest.approx((40.0, 60.0, 80.0))
    assert m["cm_5_head"] == 100.0 and m["cm_5_torso"] == 0.0 and m["cm_10_torso"] == 100.0
    assert m["cm_10_feet"] is None  # no point there
    assert m["window_10px"] is None and m["window_scaled_10px"] is None  # sparse points say nothing of the window


def test_window_error_of_a_shifted_map_is_the_shift(people, template):
    """pred(p) = GT(p - s): the vertex predicted at p is shown at p - s, so its error is |s| (or less, where the GT
    shows that vertex at several pixels); pixels whose source is background predict background (a miss)."""
    scene = people.scene((200, 140), [("front", 160, 20, 20)])
    shift = (3, 4)  # (dy, dx): 5 px
    pred = np.roll(scene.vertex, shift, axis=(0, 1))
    visible = visible_surface(scene.vertex, scene.person, template.geodesics, template.mean_edge_length)
    error, height, _ = window_errors(visible, pred)
    source_fg = pred[scene.vertex >= 0] >= 0
    assert np.all(np.isinf(error[~source_fg]))
    assert np.all(error[source_fg] <= 5.0) and np.median(error[source_fg]) > 4.0
    assert np.all(height == 160)
    m = _window(template, scene, pred)
    assert m["window_5px"] == pytest.approx(100.0 * source_fg.mean())


def test_window_floors_at_full_size_and_at_128_px(people, template):
    """Ground truth 100 at every window, raw and scaled; shuffled, random and constant maps near 0 where the window
    is small next to the person (a 300 px person, or the scaled windows at 128 px); a fixed ~3 cm surface offset high.
    """
    rng = np.random.default_rng(1)
    offset = _offset_table(template, 0.03, seed=2)
    big = people.scene((330, 160), [("front", 300, 30, 15)])
    small = people.scene((128, 128), [("front", 100, 40, 14)])
    for scene, raw_floor in ((big, 5.0), (small, None)):
        fg = scene.vertex >= 0
        perfect = _window(template, scene, scene.vertex)
        assert perfect["window_5px"] == 100.0 and perfect["window_scaled_5px"] == 100.0
        for name, pred in _trivial_maps(scene, template, rng).items():
            m = _window(template, scene, pred)
            assert m["window_scaled_20px"] < 3.0, name
            if raw_floor is not None:
                assert m["window_10px"] < raw_floor, name
        shifted = _window(template, scene, np.where(fg, offset[np.maximum(scene.vertex, 0)], -1))
        assert shifted["window_10px"] > 85
    # At 128 px the raw 10 px window is a tenth of the person: a random spot is often that close. That is why the
    # reports carry the floors, and the scaled windows.
    m = _window(template, small, _trivial_maps(small, template, rng)["shuffled"])
    assert 3.0 < m["window_10px"] < 30.0


def test_window_misses_vertices_the_person_does_not_show(people, template):
    """Predicting the back of the body on a front view, or another person's vertices, is a miss."""
    front = people.scene((200, 120), [("front", 160, 20, 20)])
    back = people.scene((200, 120), [("back", 160, 20, 20)])
    fg = front.vertex >= 0
    behind = np.where(fg, back.vertex, -1)  # the vertex on the far side of the body at each pixel
    m = _window(template, front, behind)
    assert m["window_20px"] < 5.0


def test_window_errors_equal_the_loop_reference(people, template):
    rng = np.random.default_rng(3)
    table = neighbour_table(template, k=25, seed=1)
    scenes = [
        people.scene((48, 60), [("front", 40, 4, 4), ("back", 30, 30, 14)]),
        people.scene((40, 50), [("back", 36, 10, 2)]),
    ]
    for scene in scenes:
        pred = noisy(scene.vertex, table, rng, drop=0.2)
        visible = visible_surface(scene.vertex, scene.person, template.geodesics, template.mean_edge_length)
        error, _, _ = window_errors(visible, pred)
        expected = eval_reference.window_errors(
            scene.vertex, scene.person, pred, template.geodesics, template.mean_edge_length
        )
        np.testing.assert_allclose(error, expected)
        assert np.isfinite(error).any() and np.isinf(error).any()


# ------------------------------------------------------------------------------------------------------ temporal
def _walk(people, frames: int, step: int, shape=(120, 160)) -> list:
    """One person walking right `step` px per frame, always fully in view."""
    return [people.scene(shape, [("front", 100, 10 + step * t, 10)]) for t in range(frames)]


def _temporal(template, scenes, preds, intervals=(1, 2), window_px=32.0):
    frames = [(s.vertex, s.person, p) for s, p in zip(scenes, preds, strict=True)]
    counts = temporal_consistency(
        {"seq": len(frames)},
        lambda _, t: frames[t],
        intervals=intervals,
        geodesics=template.geodesics,
        tau_m=0.05,
        window_px=window_px,
    )
    return temporal_metrics(counts), counts


def test_temporal_floors_and_stability(people, template):
    """Ground truth 100; constant, random and per-frame shuffled maps near 0; a fixed surface offset (3 cm, or even
    10 cm) high, because the model's places move with the body; the same 10 cm offset in a fresh direction every
    frame clearly lower."""
    scenes = _walk(people, 5, 3)
    rng = np.random.default_rng(4)
    perfect, counts = _temporal(template, scenes, [s.vertex for s in scenes], intervals=(1, 2, 9))
    assert perfect == {"temporal_k1": 100.0, "temporal_k2": 100.0, "temporal_k9": None}  # no pair 9 frames apart
    assert counts[1][1] > 0.9 * 4 * np.sum(scenes[0].vertex >= 0)  # almost every point stays visible

    for name in ("constant", "random", "shuffled"):
        preds = [_trivial_maps(s, template, rng, key=f"frame {t}")[name] for t, s in enumerate(scenes)]
        m, _ = _temporal(template, scenes, preds)
        assert m["temporal_k1"] < 5.0 and m["temporal_k2"] < 5.0, name

    def offset(scene, table):
        return np.where(scene.vertex >= 0, table[np.maximum(scene.vertex, 0)], -1)

    for size in (0.03, 0.10):
        table = _offset_table(template, size, seed=5)
        fixed, _ = _temporal(template, scenes, [offset(s, table) for s in scenes])
        assert fixed["temporal_k1"] > 85.0, size
    fresh, _ = _temporal(
        template, scenes, [offset(s, _offset_table(template, 0.10, seed=t)) for t, s in enumerate(scenes)]
    )
    assert fresh["temporal_k1"] < fixed["temporal_k1"] - 40.0


def test_temporal_misses_background_and_far_predictions(people, template):
    scenes = _walk(people, 4, 2)
    holes = [s.vertex if t % 2 == 0 else np.full(s.shape, -1) for t, s in enumerate(scenes)]
    m, _ = _temporal(template, scenes, holes)
    assert m["temporal_k1"] == 0.0  # every 1-apart pair has a frame predicting nothing
    assert m["temporal_k2"] == pytest.approx(50.0, abs=3.0)  # (0, 2) matches, (1, 3) predicts nothing


def test_temporal_counts_equal_the_loop_reference(people, template):
    rng = np.random.default_rng(6)
    table = neighbour_table(template, k=25, seed=1)
    walk = [people.scene((40, 56), [("front", 34, 2 + 2 * t, 3), ("back", 24, 36 - 3 * t, 12)]) for t in range(4)]
    preds = [noisy(s.vertex, table, rng, drop=0.1) for s in walk]
    _, counts = _temporal(template, walk, preds, intervals=(1, 3), window_px=64.0)
    frames = [(s.vertex, s.person, p) for s, p in zip(walk, preds, strict=True)]
    for k in (1, 3):
        expected = [0, 0]
        for t in range(len(frames) - k):
            m, n = eval_reference.temporal_pair(frames[t], frames[t + k], template.geodesics, 0.05, 64.0, 1024.0)
            expected[0] += m
            expected[1] += n
        assert counts[k] == tuple(expected)
    assert 0 < counts[1][0] < counts[1][1]


def test_torso_centre_is_on_the_torso(template):
    v = torso_centre_vertex(template)
    assert template.chart[v] in (1, 2)
