"""The template: geodesics against closed forms, charts, symmetry, UVs, colour code, LBO basis, other meshes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bodymap.densepose import CHART_FLIP, PART_FLIP
from bodymap.errors import BodymapError
from bodymap.template import BodyTemplate, Geodesics
from bodymap.template.build import build_from_mesh
from bodymap.template.charts import colour_code, symmetry_map
from bodymap.template.geodesic import build_dense, build_landmarks, march_distances
from bodymap.template.lbo import lbo_basis
from bodymap.template.stage import RUN_FIGURES


def icosphere(subdivisions: int = 3, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A unit icosphere (V = 10 * 4^s + 2), scaled to `radius`."""
    t = (1.0 + 5**0.5) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t)]
    verts += [(0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2)]
    faces += [(10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5)]
    faces += [(2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, float) / np.linalg.norm(p) for p in verts]
    f = faces
    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in f:
            ab, bc, ca = (_midpoint(v, midpoints, p, q) for p, q in ((a, b), (b, c), (c, a)))
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = new
    return (np.array(v) * radius).astype(np.float32), np.array(f, np.int32)


def _midpoint(v: list[np.ndarray], midpoints: dict[tuple[int, int], int], a: int, b: int) -> int:
    key = (min(a, b), max(a, b))
    if key not in midpoints:
        m = v[a] + v[b]
        v.append(m / np.linalg.norm(m))
        midpoints[key] = len(v) - 1
    return midpoints[key]


def sphere_geodesic(v: np.ndarray, i: np.ndarray, j: np.ndarray, radius: float) -> np.ndarray:
    cos = np.clip((v[i] * v[j]).sum(-1) / radius**2, -1.0, 1.0)
    return radius * np.arccos(cos)


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    v, f = icosphere(4, radius=0.5)
    out = tmp_path_factory.mktemp("sphere")
    build_dense(v, f, out / "geodesics.npy", workers=2)
    return v, f, Geodesics.load(out)


def test_dense_geodesics_match_closed_form_on_a_sphere(sphere):
    v, _, geo = sphere
    rng = np.random.default_rng(0)
    i, j = rng.integers(len(v), size=(2, 2000))
    exact = sphere_geodesic(v, i, j, 0.5)
    err = np.abs(geo.pair(i, j) - exact)
    # 2,562 vertices, mean edge ~2.5 cm on a 0.5 m sphere. The closed form is the smooth sphere's, so even exact
    # polyhedral geodesics miss it by ~2 mm on average. Fast marching: 2.7 mm mean (the heat method: 6.8 mm); its
    # worst, 2.3 cm, is near the antipodes, where fronts from all directions meet.
    assert err.mean() < 0.004 and err.max() < 0.03


def test_dense_geodesics_are_a_metric(sphere):
    v, _, geo = sphere
    rng = np.random.default_rng(1)
    assert np.all(geo.pair(np.arange(len(v)), np.arange(len(v))) == 0.0)
    i, j, k = rng.integers(len(v), size=(3, 5000))
    assert np.array_equal(geo.pair(i, j), geo.pair(j, i))
    # Fast marching is not an exact metric: violations stay within its approximation and float16 rounding.
    assert np.all(geo.pair(i, k) <= geo.pair(i, j) + geo.pair(j, k) + 0.003)
    rows = geo.rows(i[:10])
    assert rows.shape == (10, len(v)) and np.allclose(rows[np.arange(10), j[:10]], geo.pair(i[:10], j[:10]))


def random_square(points: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A flat unit square, Delaunay-triangulated on random points: many obtuse and thin triangles."""
    from scipy.spatial import Delaunay

    p = np.random.default_rng(seed).uniform(0.0, 1.0, size=(points, 2))
    return np.c_[p, np.zeros(points)].astype(np.float32), Delaunay(p).simplices.astype(np.int32)


def test_dense_geodesics_are_exact_on_a_flat_mesh(tmp_path):
    """On a flat convex patch geodesics are straight lines; the point-source marching is exact there, so what is
    left is float16 rounding (< 0.5 mm below 2 m). The heat method was off by 4.5 mm on average, 4.4 cm at most."""
    v, f = random_square()
    build_dense(v, f, tmp_path / "geodesics.npy")
    mat = np.load(tmp_path / "geodesics.npy").astype(np.float32)
    exact = np.linalg.norm(v[:, None].astype(np.float64) - v[None], axis=2)
    err = np.abs(mat - exact)
    assert err.mean() < 2e-4 and err.max() < 1e-3


def test_dense_geodesics_are_symmetric_and_independent_of_workers(tmp_path):
    v, f = icosphere(3, radius=0.4)  # 642 vertices: 11 chunks of sources, spread over both workers
    build_dense(v, f, tmp_path / "one.npy", workers=1)
    build_dense(v, f, tmp_path / "two.npy", workers=2)
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "two.npy").read_bytes()
    mat = np.load(tmp_path / "one.npy")
    assert mat.dtype == np.float16 and mat.shape == (len(v), len(v))
    assert np.array_equal(mat, mat.T) and np.all(np.diag(mat) == 0.0)
    assert np.all(np.isfinite(mat)) and mat[~np.eye(len(v), dtype=bool)].min() > 0.0
    # The same rows come back from the row solver whatever the chunking (64 sources a launch).
    rows = march_distances(v, f, np.arange(70, 140), workers=2)
    assert np.array_equal(rows, march_distances(v, f, np.arange(70, 140), workers=1))


def test_landmark_geodesics_are_bounded_by_the_sampling_radius(sphere, tmp_path):
    v, f, dense = sphere
    lm = Geodesics(**build_landmarks(v, f, k=128))
    rng = np.random.default_rng(2)
    i, j = rng.integers(len(v), size=(2, 2000))
    err = np.abs(lm.pair(i, j) - dense.pair(i, j))
    assert np.all(err <= lm.radius.max() + 2e-3)
    assert np.array_equal(lm.pair(i, j), lm.pair(j, i))
    assert np.all(lm.pair(i, i) == 0.0)
    assert np.allclose(lm.rows(i[:5])[np.arange(5), j[:5]], lm.pair(i[:5], j[:5]))


def test_template_counts_and_geodesic_figures(template, template_dir):
    assert template.num_vertices > 10_000 and len(template.faces) > 20_000
    assert 0.005 < template.mean_edge_length < 0.02
    metrics = yaml.safe_load((template_dir / "metrics.json").read_text())
    assert metrics["geodesic_near_abs_err_mean_m"] < 0.02
    assert metrics["geodesic_pairs"] >= 1000 and metrics["geodesic_rows_pairs"] > 100_000
    assert metrics["geodesic_near_abs_err_max_m"] >= metrics["geodesic_near_abs_err_mean_m"]
    # The artifact's figures are of its content only: seconds and memory would change its bytes every build.
    assert not set(RUN_FIGURES) & set(metrics)
    for name in ("charts", "colour_code", "u", "v"):
        assert (template_dir / "pictures" / f"{name}.png").stat().st_size > 1000


def test_symmetry_is_an_involution_and_flips_charts(template):
    sym = template.symmetry
    ids = np.arange(template.num_vertices)
    assert np.array_equal(sym[sym], ids)
    moved = sym != ids
    assert np.array_equal(template.chart[sym[moved]], CHART_FLIP[template.chart[moved]])
    assert np.array_equal(template.part[sym[moved]], PART_FLIP[template.part[moved]])
    # Vertices on the sagittal plane are their own mirror: only the torso and the head's seam may hold them.
    assert set(np.unique(template.chart[~moved])) <= {1, 2, 23, 24}
    # Mirrored positions agree (shaped bodies are symmetric to well under a millimetre).
    mirrored = template.vertices[sym] * np.array([-1, 1, 1])
    assert np.abs(mirrored - template.vertices).max() < 1e-3


def test_every_chart_and_part_is_present_and_mirrored_in_size(template):
    charts = np.bincount(template.chart, minlength=25)
    parts = np.bincount(template.part, minlength=15)
    assert charts[0] == 0 and np.all(charts[1:] > 0)
    assert parts[0] == 0 and np.all(parts[1:] > 0)
    # Mirror charts match in size up to the sagittal-plane vertices (their own mirror; the head's seam holds them).
    on_plane = np.bincount(template.chart[template.symmetry == np.arange(template.num_vertices)], minlength=25)
    for c in range(1, 25):
        f = CHART_FLIP[c]
        if f != c:
            assert abs(charts[c] - charts[f]) <= on_plane[c] + on_plane[f] + 0.02 * max(charts[c], charts[f])


def test_charts_follow_the_body(template):
    """Left means the person's left (+x); front charts face +z; the head is on top."""
    v, chart = template.vertices, template.chart
    assert v[chart == 4, 0].mean() > 0.2 and v[chart == 3, 0].mean() < -0.2  # left / right hand
    assert v[chart == 2, 2].mean() > v[chart == 1, 2].mean()  # torso front is in front of the back
    assert v[np.isin(chart, (23, 24)), 1].mean() > v[np.isin(chart, (1, 2)), 1].mean()
    assert v[np.isin(chart, (5, 6)), 1].mean() < v[np.isin(chart, (11, 12, 13, 14)), 1].mean()


def test_uv_in_unit_square_and_identifies_vertices(template):
    assert template.uv.min() >= 0.0 and template.uv.max() <= 1.0
    ids = np.arange(template.num_vertices)
    back = template.iuv_to_vertex(template.chart, template.uv[:, 0], template.uv[:, 1])
    assert (back == ids).mean() > 0.999
    # The rare misses are vertices sharing exactly the same (I, U, V).
    miss = back != ids
    assert np.array_equal(template.chart[back[miss]], template.chart[miss])
    assert np.allclose(template.uv[back[miss]], template.uv[miss])


def test_uv_is_continuous_inside_charts(template):
    e = template.edges
    same = template.chart[e[:, 0]] == template.chart[e[:, 1]]
    jump = np.linalg.norm(template.uv[e[same, 0]] - template.uv[e[same, 1]], axis=1)
    # No seams inside a chart: a seam would jump across the unit square (~0.5-1); edges stay well below.
    assert jump.max() < 0.4 and np.median(jump) < 0.05


def test_colour_code_is_unique_decodable_and_smooth(template):
    ids = np.arange(template.num_vertices)
    assert len(np.unique(template.colors, axis=0)) == template.num_vertices
    assert np.array_equal(template.decode_colors(template.colors), ids)
    e = template.edges
    step = np.abs(template.colors[e[:, 0]].astype(int) - template.colors[e[:, 1]].astype(int)).max(axis=1)
    assert np.percentile(step, 99) <= 16
    # A colour one step off still decodes to that vertex or a mesh neighbour.
    off = np.clip(template.colors.astype(int) + 1, 0, 255)
    decoded = template.decode_colors(off)
    near = template.geodesics.pair(decoded, ids)
    assert np.percentile(near, 95) < 3 * template.mean_edge_length + 0.05


def test_lbo_basis_is_mass_orthonormal(template):
    basis, mass = template.lbo_basis.astype(np.float64), template.vertex_area.astype(np.float64)
    gram = basis.T @ (mass[:, None] * basis)
    assert np.abs(gram - np.eye(gram.shape[0])).max() < 1e-3
    assert template.lbo_eigenvalues[0] < 1e-6 and np.all(np.diff(template.lbo_eigenvalues) >= -1e-6)


def test_lbo_basis_rebuilds_to_the_same_bytes_whatever_the_blas_threads(template):
    """The fixture's basis was built in another process; rebuilding it here, also with OpenBLAS on 2 threads
    around the call, gives the same bits (fixed ARPACK start vector, solver pinned to one BLAS thread)."""
    from threadpoolctl import threadpool_limits

    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            values, basis, area = lbo_basis(template.vertices, template.faces, template.lbo_basis.shape[1])
        assert values.tobytes() == template.lbo_eigenvalues.tobytes()
        assert basis.tobytes() == template.lbo_basis.tobytes() and area.tobytes() == template.vertex_area.tobytes()


def test_keypoints_and_skinning_are_kept(template):
    names = template.meta["keypoint_names"]
    assert names[:3] == ["nose", "left_eye", "right_eye"]
    assert template.keypoint_weights.shape == (len(names), template.meta["full_vertex_count"])
    assert np.allclose(template.keypoint_weights.sum(axis=1), 1.0, atol=1e-3)
    assert template.template_to_full.shape == (template.num_vertices,)
    assert template.skin_weights.shape[0] == template.num_vertices


# ------------------------------------------------------------------------------------------ other templates
def _write_custom_template(tmp_path: Path) -> tuple[Path, Path]:
    """A sphere 'body' with charts by octant-ish regions and UVs from spherical angles."""
    v, f = icosphere(2, radius=0.3)
    mesh = tmp_path / "sphere.obj"
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    mesh.write_text("\n".join(lines) + "\n")
    # Torso front/back by z, hands at the sides: a symmetric labelling that respects the flip table.
    chart = np.where(v[:, 2] >= 0, 2, 1)
    chart[v[:, 0] > 0.2] = 4
    chart[v[:, 0] < -0.2] = 3
    u = (np.arctan2(v[:, 2], np.abs(v[:, 0])) / np.pi + 0.5).clip(0, 1)
    vv = (v[:, 1] / 0.6 + 0.5).clip(0, 1)
    charts = tmp_path / "charts.npz"
    np.savez(charts, I=chart.astype(np.uint8), U=u.astype(np.float32), V=vv.astype(np.float32))
    return mesh, charts


def test_mesh_template_loader(tmp_path):
    mesh, charts = _write_custom_template(tmp_path)
    template = build_from_mesh(mesh, charts, name="sphere", lbo_k=8)
    assert template.name == "sphere" and template.num_vertices == 162
    assert np.array_equal(template.symmetry[template.symmetry], np.arange(162))
    assert np.array_equal(template.decode_colors(template.colors), np.arange(162))
    template.save(tmp_path / "out")
    loaded = BodyTemplate.load(tmp_path / "out")
    assert np.array_equal(loaded.chart, template.chart)


def test_mesh_template_bad_chart_file_names_the_field(tmp_path):
    mesh, charts = _write_custom_template(tmp_path)
    data = dict(np.load(charts))
    data["I"] = data["I"][:-1]
    np.savez(charts, **data)
    with pytest.raises(BodymapError, match=r"charts.npz: field 'I': expected shape \(162,\)"):
        build_from_mesh(mesh, charts)
    data["I"] = np.full(162, 30, np.uint8)
    np.savez(charts, **data)
    with pytest.raises(BodymapError, match="field 'I': expected chart ids in 1..24"):
        build_from_mesh(mesh, charts)


def test_template_command_on_a_custom_mesh(tmp_path):
    """The real `bodymap template` command, end to end, on a small mesh (no Anny needed)."""
    mesh, charts = _write_custom_template(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"template": {"source": "mesh", "mesh": {"path": str(mesh), "charts": str(charts)}, "lbo_k": 8}})
    )
    out = tmp_path / "artifact"
    cmd = [sys.executable, "-m", "bodymap.cli", "template", "--params", str(params), "--out", str(out), "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("template.npz", "template.json", "geodesics.npy", "metrics.json", "run.yaml", "pictures/charts.png"):
        assert (out / name).exists(), name
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["stage"] == "template" and run["params"]["source"] == "mesh" and "git_commit" in run
    geo = Geodesics.load(out)
    assert geo.mode == "dense" and geo.num_vertices == 162


def test_colour_code_resolves_collisions():
    pts = np.zeros((5, 3), np.float32)
    pts[1:] = 1e-6  # four points that would round to the same colour
    pts[-1] = 1.0
    colours = colour_code(pts)
    assert len(np.unique(colours, axis=0)) == 5


def test_symmetry_map_rejects_asymmetric_meshes():
    v, _ = icosphere(1)
    v = v.copy()
    v[v[:, 0] > 0.1, 0] += 0.05
    with pytest.raises(ValueError, match="not left/right symmetric"):
        symmetry_map(v)
