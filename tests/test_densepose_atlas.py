"""DensePose's own files as a template source: SMPL-like mesh + `UV_Processed.mat` -> a template whose charts are
DensePose's atlas; (I, U, V) follows DensePose's rule; real-format points on any other template are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from densepose_files import atlas_of, write_smpl_like_model, write_uv_processed
from scipy.io import loadmat, savemat

from bodymap.data.coco import read_coco
from bodymap.errors import BodymapError
from bodymap.template import BodyTemplate
from bodymap.template.atlas import atlas_vertex_chart, read_uv_processed
from bodymap.template.build import build_from_densepose


@pytest.fixture(scope="module")
def dp_files(template, tmp_path_factory):
    root = tmp_path_factory.mktemp("densepose")
    np.save(root / "symmetry.npy", template.symmetry)
    return (
        write_smpl_like_model(root / "smpl.npz", template),
        write_uv_processed(root / "UV_Processed.mat", template),
        root / "symmetry.npy",
    )


@pytest.fixture(scope="module")
def dp_template(dp_files, tmp_path_factory) -> BodyTemplate:
    built = build_from_densepose(*dp_files[:2], name="smpl", lbo_k=4, symmetry_path=dp_files[2])
    out = tmp_path_factory.mktemp("dp-template")
    built.save(out)
    return BodyTemplate.load(out)  # what later stages see: the atlas survives the artifact


def test_the_fixture_is_in_densepose_layout(dp_files):
    data = loadmat(dp_files[1])
    faces = data["All_Faces"]
    assert data["All_FaceIndices"].shape == (len(faces), 1) and faces.shape[1] == 3 and faces.min() == 1
    assert data["All_U_norm"].shape == data["All_V_norm"].shape == (data["All_vertices"].shape[1], 1)
    assert data["All_vertices"].shape[0] == 1 and data["All_vertices"].min() == 1


def test_iuv_of_every_atlas_vertex_maps_back_to_its_mesh_vertex_exactly(dp_template, template):
    faces, _, uv, vertex = atlas_of(template)
    assert dp_template.has_densepose_atlas and dp_template.meta["atlas"] == "densepose"
    assert np.array_equal(dp_template.atlas_vertex, vertex) and np.array_equal(dp_template.atlas_faces, faces)
    chart = atlas_vertex_chart(dp_template.atlas)
    assert np.array_equal(chart, template.chart[vertex])  # atlas vertices are chart-local copies
    back = dp_template.iuv_to_vertex(chart, uv[:, 0], uv[:, 1])
    assert np.array_equal(back, vertex)  # exact, all of them
    # the per-vertex charts are the atlas's: every referenced vertex keeps the chart of its atlas copy
    assert np.array_equal(dp_template.chart[vertex], chart)


def _densepose_reference(atlas, vertices, i, u, v) -> int:
    """DensePose's notebook rule, point by point: the first chart-i face (file order) whose UV triangle holds the
    point (its own inclusive cross-product test), barycentric surface point, then here its nearest corner; outside
    every triangle, the chart corner nearest in UV."""
    uv = atlas.uv.tolist()
    ids = np.flatnonzero(atlas.face_chart == i)
    for f in ids.tolist():
        (x0, y0), (x1, y1), (x2, y2) = (uv[c] for c in atlas.faces[f].tolist())
        ax, ay, bx, by, wx, wy = x1 - x0, y1 - y0, x2 - x0, y2 - y0, u - x0, v - y0
        # the z components of DensePose's 3-D cross products (its points have z = 0)
        b_w, b_a, a_w, a_b = bx * wy - by * wx, bx * ay - by * ax, ax * wy - ay * wx, ax * by - ay * bx
        if b_w * b_a < 0 or a_w * a_b < 0:
            continue
        r, t = abs(b_w) / abs(a_b), abs(a_w) / abs(a_b)
        if r <= 1 and t <= 1 and r + t <= 1:
            corners = atlas.vertex[atlas.faces[f]]
            point = (1 - r - t) * vertices[corners[0]] + r * vertices[corners[1]] + t * vertices[corners[2]]
            return int(corners[np.argmin(np.linalg.norm(vertices[corners] - point, axis=1))])
    corners = np.unique(atlas.faces[ids])
    return int(atlas.vertex[corners[np.argmin(np.linalg.norm(atlas.uv[corners] - [u, v], axis=1))]])


def test_points_inside_and_outside_the_triangles_follow_densepose_rule(dp_template):
    atlas, rng = dp_template.atlas, np.random.default_rng(0)
    faces = rng.choice(len(atlas.faces), 40, replace=False)
    weights = rng.dirichlet([1.0, 1.0, 1.0], len(faces))
    uv = np.einsum("nk,nkd->nd", weights, atlas.uv[atlas.faces[faces]])
    chart = atlas.face_chart[faces].astype(int)
    # and points of random charts anywhere in the square, most of them in no triangle
    chart = np.concatenate([chart, rng.integers(1, 25, 20)])
    uv = np.concatenate([uv, rng.uniform(0, 1, (20, 2))])
    found = dp_template.iuv_to_vertex(chart, uv[:, 0], uv[:, 1])
    expected = [_densepose_reference(atlas, dp_template.vertices.astype(np.float64), *row) for row in
                zip(chart, uv[:, 0], uv[:, 1], strict=True)]  # fmt: skip
    assert found.tolist() == expected
    inside = found[:40]
    assert np.all(np.any(atlas.vertex[atlas.faces[faces]] == inside[:, None], axis=1))


def _real_format_doc(template, vertex: np.ndarray, uv: np.ndarray, chart: np.ndarray) -> dict:
    """One image, one person, DensePose-COCO's own fields: no ref_model, no dp_vertex."""
    n = len(vertex)
    return {
        "images": [{"id": 3, "file_name": "000000000003.jpg", "height": 120, "width": 90}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {
                "id": 11, "image_id": 3, "category_id": 1, "bbox": [5.0, 6.0, 60.0, 100.0], "area": 6000.0,
                "iscrowd": 0, "dp_x": np.linspace(0, 255, n).tolist(), "dp_y": np.linspace(255, 0, n).tolist(),
                "dp_I": chart.astype(float).tolist(), "dp_U": uv[:, 0].tolist(), "dp_V": uv[:, 1].tolist(),
            }
        ],
    }  # fmt: skip


def test_real_format_points_read_on_the_densepose_template_and_are_refused_elsewhere(dp_template, template, tmp_path):
    _, _, uv, vertex = atlas_of(template)
    pick = np.random.default_rng(1).choice(len(vertex), 30, replace=False)
    chart = atlas_vertex_chart(dp_template.atlas)[pick]
    path = tmp_path / "densepose_coco_2014_minival.json"
    path.write_text(json.dumps(_real_format_doc(template, vertex[pick], uv[pick], chart)))
    assert np.array_equal(read_coco(path, dp_template).vertex, vertex[pick])
    with pytest.raises(BodymapError) as err:
        read_coco(path, template)  # the Anny template: its own charts, not DensePose's atlas
    message = str(err.value)
    assert str(path) in message and "annotation id 11" in message and "'dp_I/dp_U/dp_V'" in message
    assert "no ref_model" in message and template.name in message and "template.source: densepose" in message
    # CSE-style points on a mesh that is not the template: refused too, even with dp_I/U/V beside them
    doc = json.loads(path.read_text())
    doc["annotations"][0].update(dp_vertex=vertex[pick].tolist(), ref_model="smpl_27554")
    path.write_text(json.dumps(doc))
    for target in (template, dp_template):
        with pytest.raises(BodymapError, match=r"field 'ref_model': dp_vertex indexes the vertices of 'smpl_27554'"):
            read_coco(path, target)
    # ... and read where the template is that mesh
    doc["annotations"][0]["ref_model"] = dp_template.name
    path.write_text(json.dumps(doc))
    assert np.array_equal(read_coco(path, dp_template).vertex, vertex[pick])


def test_uv_data_errors_name_the_file_and_field(dp_files, template, tmp_path):
    data = {k: v for k, v in loadmat(dp_files[1]).items() if k.startswith("All_")}
    bad = tmp_path / "bad.mat"
    savemat(bad, {k: v for k, v in data.items() if k != "All_vertices"})
    with pytest.raises(BodymapError, match=r"bad.mat: field 'All_vertices': missing"):
        read_uv_processed(bad, template.num_vertices)
    savemat(bad, {**data, "All_Faces": data["All_Faces"] - 1})  # 0-based corners: not DensePose's layout
    with pytest.raises(BodymapError, match=r"bad.mat: field 'All_Faces': expected integers in 1\.\."):
        read_uv_processed(bad, template.num_vertices)
    with pytest.raises(BodymapError, match=r"field 'All_vertices': expected integers in 1\.\.100"):
        read_uv_processed(dp_files[1], 100)  # UV data of a bigger mesh than the model file


def test_the_template_stage_needs_both_densepose_files(tmp_path):
    from bodymap.config import TemplateParams
    from bodymap.template.stage import build_template

    params = TemplateParams.model_validate({"source": "densepose", "densepose": {"model": "smpl.npz"}})
    with pytest.raises(BodymapError, match=r"template.densepose.model and template.densepose.uv_data must be set"):
        build_template(params, tmp_path / "template")
    assert not (tmp_path / "template").exists()
