"""Build a `BodyTemplate` from Anny, or from any mesh with per-vertex chart labels and UVs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bodymap.errors import BodymapError
from bodymap.template.atlas import atlas_vertex_chart, read_uv_processed
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


def read_body_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] float32 (metres, body frame) and faces [F, 3] int32 of a body mesh file.

    An SMPL model file (`.pkl` or `.npz` with `v_template` and `f`: the rest-pose mean shape, SMPL's own frame is
    already x = left, y = up, z = forward), an `.npz` with `vertices` and `faces`, or any mesh potpourri3d reads
    (OBJ, PLY, OFF, STL).
    """
    path = Path(path)
    if not path.is_file():
        raise BodymapError(f"{path}: mesh file not found")
    if path.suffix in (".pkl", ".npz"):
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    model = {k: data[k] for k in data.files}
            else:
                import pickle

                with path.open("rb") as f:
                    model = pickle.load(f, encoding="latin1")  # SMPL's own model files are Python 2 pickles
        except ModuleNotFoundError as exc:  # SMPL's original .pkl holds chumpy arrays
            raise BodymapError(
                f"{path}: this SMPL file needs the {exc.name!r} package to unpickle; convert it to an .npz with "
                "'v_template' and 'f' (or export an .obj of the mean shape) and point template.densepose.model at it"
            ) from None
        except Exception as exc:  # numpy/pickle raise many types for broken files
            raise BodymapError(f"{path}: cannot read the model file ({exc})") from None
        keys = ("v_template", "f") if "v_template" in model else ("vertices", "faces")
        for key in keys:
            if key not in model:
                raise BodymapError(f"{path}: field '{key}': missing; expected SMPL's v_template and f")
        vertices, faces = np.asarray(model[keys[0]], np.float64), np.asarray(model[keys[1]])
    else:
        import potpourri3d as pp3d

        try:
            vertices, faces = pp3d.read_mesh(str(path))
        except Exception as exc:  # potpourri3d raises RuntimeError with its own text
            raise BodymapError(f"{path}: cannot read mesh ({exc})") from None
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        shapes = f"{vertices.shape}, {faces.shape}"
        raise BodymapError(f"{path}: expected [V, 3] vertices and [F, 3] triangles, got {shapes}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise BodymapError(f"{path}: faces index vertices outside 0..{len(vertices) - 1}")
    return vertices.astype(np.float32), faces.astype(np.int32)


def build_from_densepose(
    model_path: str | Path,
    uv_path: str | Path,
    name: str = "smpl",
    lbo_k: int = 64,
    symmetry_path: str | Path | None = None,
) -> BodyTemplate:
    """A template whose charts are DensePose's atlas: the SMPL mesh plus DensePose's `UV_Processed.mat`.

    Each mesh vertex takes the chart and (U, V) of its first atlas copy (seam vertices have one per chart); the
    atlas itself is kept, so (I, U, V) -> vertex follows DensePose's rule (`bodymap.template.atlas`). Vertices the
    atlas never references (none on SMPL) take the chart of the nearest referenced vertex; their number is recorded.
    Symmetry comes from `symmetry_path` ([V] int mirror map, .npy) or the mesh's own x -> -x mirror within 1 mm.
    """
    from scipy.spatial import cKDTree

    vertices, faces = read_body_mesh(model_path)
    atlas = read_uv_processed(uv_path, len(vertices))
    atlas_chart = atlas_vertex_chart(atlas)
    first = np.full(len(vertices), -1, np.int64)
    used = np.flatnonzero(atlas_chart > 0)
    first[atlas.vertex[used[::-1]]] = used[::-1]  # reversed: the lowest atlas index is written last
    referenced = first >= 0
    if not referenced.any():
        raise BodymapError(f"{uv_path}: the atlas has no face, so no vertex of {model_path} gets a chart")
    _, nearest = cKDTree(vertices[referenced]).query(vertices[~referenced])
    first[~referenced] = first[referenced][nearest]
    chart = atlas_chart[first]
    uv = atlas.uv[first].astype(np.float32)
    if symmetry_path is not None:
        try:
            symmetry = np.load(symmetry_path).astype(np.int32)
        except (OSError, ValueError) as exc:
            raise BodymapError(f"{symmetry_path}: cannot read the symmetry map ({exc})") from None
        n = len(vertices)
        valid = symmetry.shape == (n,) and symmetry.min() >= 0 and symmetry.max() < n
        if not valid or np.any(symmetry[symmetry] != np.arange(n)):
            raise BodymapError(f"{symmetry_path}: expected a [{n}] int mirror map that is its own inverse")
    else:
        try:
            symmetry = symmetry_map(vertices, tol=1e-3)
        except ValueError as exc:
            raise BodymapError(f"{model_path}: {exc}; set template.densepose.symmetry to a [V] mirror map") from None
    meta = {
        "name": name,
        "source": "densepose",
        "atlas": "densepose",
        "mesh": str(model_path),
        "uv_data": str(uv_path),
        "uv_method": "DensePose's atlas (UV_Processed.mat): (I, U, V) -> containing UV triangle -> nearest corner",
        "atlas_faces": len(atlas.faces),
        "atlas_vertices": len(atlas.uv),
        "atlas_unreferenced_vertices": int((~referenced).sum()),
    }
    template = _finish(vertices, faces, chart, symmetry, lbo_k, meta, uv=uv)
    template.atlas_faces, template.atlas_face_chart = atlas.faces, atlas.face_chart
    template.atlas_uv, template.atlas_vertex = atlas.uv, atlas.vertex
    if (~referenced).any():
        log.warning("%s: %d mesh vertices are in no atlas face", uv_path, int((~referenced).sum()))
    return template


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
