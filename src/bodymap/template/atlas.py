"""DensePose's own chart atlas (`UV_Processed.mat`) and its rule from (I, U, V) to a surface point.

DensePose-COCO's `dp_I`, `dp_U`, `dp_V` are coordinates on DensePose's SMPL atlas, not on any per-vertex chart
parameterisation: the atlas cuts SMPL along its chart seams (SMPL vertices on a seam appear once per chart) and lays
each chart's triangles out in [0, 1]^2. `UV_Processed.mat` (MATLAB v5) holds it:

    All_FaceIndices  [F, 1]  chart (part) id 1..24 of each atlas face
    All_Faces        [F, 3]  1-based corner indices into the atlas vertices
    All_U_norm       [A, 1]  U of each atlas vertex, in [0, 1]
    All_V_norm       [A, 1]  V of each atlas vertex, in [0, 1]
    All_vertices     [1, A]  1-based id of each atlas vertex in the SMPL mesh

A point (I, U, V) lies in the first chart-I face (in file order) whose UV triangle contains it, borders included;
its barycentric coordinates there give the surface point, which this module reports as the nearest of the
triangle's three corners (in 3D). A point inside no chart-I triangle goes to the chart-I corner nearest in UV.
This is the rule of DensePose's own notebooks (`IUV2FBC`, `FBC2PointOnSurface`), vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodymap.errors import BodymapError

UV_KEYS = ("All_FaceIndices", "All_Faces", "All_U_norm", "All_V_norm", "All_vertices")


@dataclass(frozen=True)
class Atlas:
    """A chart atlas whose vertices are copies of mesh vertices.

    Attributes:
        faces: [F, 3] int32 0-based atlas-vertex corners. face_chart: [F] uint8 chart id 1..24.
        uv: [A, 2] float64 (U, V) in [0, 1]. vertex: [A] int32 0-based mesh vertex of each atlas vertex.
    """

    faces: np.ndarray
    face_chart: np.ndarray
    uv: np.ndarray
    vertex: np.ndarray


def _field(path: Path, data: dict, key: str, rows: int | None, cols: int) -> np.ndarray:
    """One .mat array as [rows, cols] (MATLAB's [1, N] and [N, 1] both read as N rows of one column)."""
    if key not in data:
        raise BodymapError(f"{path}: field '{key}': missing; expected DensePose's UV_Processed.mat keys {UV_KEYS}")
    array = np.asarray(data[key])
    if cols == 1:
        array = array.reshape(-1, 1) if array.ndim == 2 and 1 in array.shape else array
    if array.ndim != 2 or array.shape[1] != cols or (rows is not None and array.shape[0] != rows):
        want = f"[{rows if rows is not None else 'N'}, {cols}]"
        raise BodymapError(f"{path}: field '{key}': expected a {want} array, got shape {array.shape}")
    if not np.isfinite(array.astype(np.float64)).all():
        raise BodymapError(f"{path}: field '{key}': expected finite numbers")
    return array


def _integers(path: Path, key: str, array: np.ndarray, lo: int, hi: int) -> np.ndarray:
    values = array.astype(np.float64)
    if np.any(values != np.round(values)) or values.min() < lo or values.max() > hi:
        bad = values[(values != np.round(values)) | (values < lo) | (values > hi)][0]
        raise BodymapError(f"{path}: field '{key}': expected integers in {lo}..{hi}, got {bad:g}")
    return values.astype(np.int64)


def read_uv_processed(path: str | Path, num_vertices: int) -> Atlas:
    """Read and check DensePose's `UV_Processed.mat` against a mesh of `num_vertices` vertices."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        data = loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:  # scipy's errors for unreadable files
        raise BodymapError(f"{path}: cannot read DensePose UV data as a MATLAB file ({exc})") from None
    faces = _field(path, data, "All_Faces", None, 3)
    face_chart = _field(path, data, "All_FaceIndices", len(faces), 1)
    u = _field(path, data, "All_U_norm", None, 1)
    v = _field(path, data, "All_V_norm", len(u), 1)
    vertex = _field(path, data, "All_vertices", len(u), 1)
    faces = _integers(path, "All_Faces", faces, 1, len(u)) - 1
    face_chart = _integers(path, "All_FaceIndices", face_chart, 1, 24)[:, 0]
    vertex = _integers(path, "All_vertices", vertex, 1, num_vertices)[:, 0] - 1
    uv = np.concatenate([u, v], axis=1).astype(np.float64)
    if uv.min() < 0 or uv.max() > 1:
        raise BodymapError(f"{path}: fields 'All_U_norm'/'All_V_norm': expected values in [0, 1]")
    return Atlas(faces.astype(np.int32), face_chart.astype(np.uint8), uv, vertex.astype(np.int32))


def atlas_vertex_chart(atlas: Atlas) -> np.ndarray:
    """[A] uint8 chart of each atlas vertex (the chart of the first face using it; 0 if no face does)."""
    chart = np.zeros(len(atlas.uv), np.uint8)
    corners = atlas.faces[::-1].ravel()  # reversed, so the first face's value is written last and wins
    chart[corners] = np.repeat(atlas.face_chart[::-1], 3)
    return chart


def _barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """Barycentric weights of points p [N, 1, 2] in triangles a, b, c [1, F, 2] -> three [N, F] arrays (NaN for
    degenerate triangles)."""
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        wb = (v2[..., 0] * v1[..., 1] - v1[..., 0] * v2[..., 1]) / den
        wc = (v0[..., 0] * v2[..., 1] - v2[..., 0] * v0[..., 1]) / den
    return 1.0 - wb - wc, wb, wc


def iuv_to_vertex(
    atlas: Atlas, vertices: np.ndarray, chart: np.ndarray, u: np.ndarray, v: np.ndarray, block: int = 1024
) -> np.ndarray:
    """Mesh vertex of each (I, U, V) point by DensePose's rule (module docstring).

    Args:
        vertices: [V, 3] mesh positions (for the nearest corner in 3D). chart: [N] int 1..24; u, v: [N] float.
    Returns:
        [N] int32 mesh vertex ids (-1 where the atlas has no face of chart I).
    """
    chart = np.asarray(chart).astype(np.int64).ravel()
    uv = np.stack([np.asarray(u, np.float64).ravel(), np.asarray(v, np.float64).ravel()], axis=1)
    out = np.full(len(chart), -1, np.int32)
    eps = 1e-12  # borders count as inside (DensePose's test is inclusive); only rounding noise is forgiven
    for c in np.unique(chart):
        faces = atlas.faces[atlas.face_chart == c]
        if not len(faces):
            continue
        rows = np.flatnonzero(chart == c)
        tri = atlas.uv[faces]  # [F, 3, 2]
        corners = np.unique(faces)
        for start in range(0, len(rows), block):
            sel = rows[start : start + block]
            p = uv[sel][:, None, :]
            w0, w1, w2 = _barycentric(p, tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
            inside = (w0 >= -eps) & (w1 >= -eps) & (w2 >= -eps)
            hit = inside.any(axis=1)
            first = inside.argmax(axis=1)  # the first containing face in file order
            k = np.arange(len(sel))
            weights = np.stack([w0[k, first], w1[k, first], w2[k, first]], axis=1)
            face = faces[first]  # [n, 3] atlas corners
            corner_xyz = vertices[atlas.vertex[face]].astype(np.float64)  # [n, 3, 3]
            point = (weights[:, :, None] * corner_xyz).sum(axis=1)
            nearest = np.linalg.norm(corner_xyz - point[:, None], axis=2).argmin(axis=1)
            found = atlas.vertex[face[k, nearest]]
            if not hit.all():  # in no triangle: the chart's corner nearest in UV
                miss = ~hit
                d = np.linalg.norm(uv[sel[miss]][:, None] - atlas.uv[corners][None], axis=2)
                found[miss] = atlas.vertex[corners[d.argmin(axis=1)]]
            out[sel] = found
    return out


__all__ = ["UV_KEYS", "Atlas", "atlas_vertex_chart", "iuv_to_vertex", "read_uv_processed"]
