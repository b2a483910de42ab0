"""Build a `BodyTemplate` from Anny, or from any mesh with per-vertex chart labels and UVs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bodymap.errors import BodymapError
from bodymap.template.charts import (
    assign_charts,
    chart_parts,
    chart_uv,
    colour_code,
    largest_component,
    region_labels,
    symmetry_map,
)
from bodymap.template.lbo import lbo_basis
from bodymap.template.mesh import BodyTemplate

log = logging.getLogger(__name__)


def build_from_anny(topology: str = "anny", shape: dict[str, float] | None = None, lbo_k: int = 64) -> BodyTemplate:
    """The Anny body surface at a given shape, in its rest A-pose.

    Anny's mesh also holds eyeballs and a tongue as separate pieces; the template is the largest connected
    component (the skin), and the renderer maps pixels on the other pieces to the nearest skin point.
    """
    from bodymap.template.anny_body import AnnyBody, bone_region

    shape = dict(shape or {})
    body = AnnyBody(topology)
    full = body.pose([shape]).vertices[0]
    keep = largest_component(body.faces, len(full))
    template_to_full = np.flatnonzero(keep).astype(np.int32)
    remap = np.full(len(full), -1, np.int64)
    remap[template_to_full] = np.arange(len(template_to_full))
    faces = remap[body.faces[keep[body.faces].all(axis=1)]].astype(np.int32)
    vertices = full[keep].astype(np.float32)
    log.info("Anny %r: %d of %d vertices form the body surface", topology, len(vertices), len(full))

    # Symmetry is a property of the topology: match mirrors on the exactly symmetric base mesh, not the shaped one.
    symmetry = symmetry_map(body.base_vertices()[keep], tol=1e-5)
    weights, bones = body.skinning()
    weights, bones = weights[keep], bones[keep]
    keys, regions = region_labels([bone_region(b) for b in body.bone_labels], weights, bones)
    chart = assign_charts(vertices, faces, keys, regions, symmetry)
    meta = {
        "name": f"anny-{topology}",
        "source": "anny",
        "anny_topology": topology,
        "shape": shape,
        "frame": "x = person's left, y = up, z = forward (person faces +z), metres",
        "bone_labels": body.bone_labels,
        "bone_parents": body.bone_parents,
        "keypoint_names": body.keypoint_names,
        "full_vertex_count": len(full),
        "uv_method": "per-chart mean-value disk map (see bodymap.template.charts)",
        "colour_code": "rest-pose xyz scaled per axis to 0..255, collisions moved to the nearest free colour",
    }
    return _finish(
        vertices, faces, chart, symmetry, lbo_k, meta, template_to_full, body.keypoint_weights(), weights, bones
    )


def build_from_mesh(
    mesh_path: str | Path, charts_path: str | Path, name: str = "custom", lbo_k: int = 64
) -> BodyTemplate:
    """A template from a mesh file (OBJ/PLY) and an .npz holding per-vertex `I` (1..24), `U`, `V` in [0, 1].

    The .npz may also hold `symmetry` ([V] int mirror map); without it the mesh must be left/right symmetric
    about x = 0 to within 1 mm. Such templates carry no skinning, so they serve evaluation and training on real
    data, not the renderer.
    """
    import potpourri3d as pp3d

    mesh_path, charts_path = Path(mesh_path), Path(charts_path)
    try:
        vertices, faces = pp3d.read_mesh(str(mesh_path))
    except Exception as exc:  # potpourri3d raises RuntimeError with its own text
        raise BodymapError(f"{mesh_path}: cannot read mesh ({exc})") from None
    vertices, faces = vertices.astype(np.float32), faces.astype(np.int32)
    try:
        data = np.load(charts_path)
    except (OSError, ValueError) as exc:
        raise BodymapError(f"{charts_path}: cannot read chart file ({exc})") from None
    for key in ("I", "U", "V"):
        if key not in data:
            raise BodymapError(f"{charts_path}: field '{key}': missing; expected a [{len(vertices)}] array")
        if data[key].shape != (len(vertices),):
            raise BodymapError(
                f"{charts_path}: field '{key}': expected shape ({len(vertices)},), got {data[key].shape}"
            )
    chart = data["I"].astype(np.uint8)
    if chart.min() < 1 or chart.max() > 24:
        raise BodymapError(f"{charts_path}: field 'I': expected chart ids in 1..24, got {chart.min()}..{chart.max()}")
    uv = np.stack([data["U"], data["V"]], axis=1).astype(np.float32)
    if uv.min() < 0 or uv.max() > 1:
        raise BodymapError(f"{charts_path}: fields 'U'/'V': expected values in [0, 1]")
    if "symmetry" in data:
        symmetry = data["symmetry"].astype(np.int32)
    else:
        try:
            symmetry = symmetry_map(vertices, tol=1e-3)
        except ValueError as exc:
            raise BodymapError(f"{mesh_path}: {exc}; give a 'symmetry' array in {charts_path}") from None
    meta = {"name": name, "source": "mesh", "mesh": str(mesh_path), "charts": str(charts_path), "uv_method": "given"}
    return _finish(vertices, faces, chart, symmetry, lbo_k, meta, uv=uv)


def _finish(
    vertices: np.ndarray,
    faces: np.ndarray,
    chart: np.ndarray,
    symmetry: np.ndarray,
    lbo_k: int,
    meta: dict,
    template_to_full: np.ndarray | None = None,
    keypoint_weights: np.ndarray | None = None,
    skin_weights: np.ndarray | None = None,
    skin_bones: np.ndarray | None = None,
    uv: np.ndarray | None = None,
) -> BodyTemplate:
    if uv is None:
        uv = chart_uv(vertices, faces, chart, symmetry)
    values, basis, area = lbo_basis(vertices, faces, min(lbo_k, len(vertices) - 2))
    optional = {
        "template_to_full": template_to_full,
        "keypoint_weights": keypoint_weights,
        "skin_weights": skin_weights,
        "skin_bones": skin_bones,
    }
    return BodyTemplate(
        vertices=vertices,
        faces=faces,
        chart=chart,
        part=chart_parts(chart),
        uv=uv,
        colors=colour_code(vertices),
        symmetry=symmetry,
        lbo_basis=basis,
        lbo_eigenvalues=values,
        vertex_area=area,
        meta=meta,
        **{k: v for k, v in optional.items() if v is not None},
    )
