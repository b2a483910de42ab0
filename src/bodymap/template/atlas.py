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
    """Barycentric weights of points p [..., 2] in triangles a, b, c [..., 2] -> three [...] arrays (NaN for
    degenerate triangles)."""
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        wb = (v2[..., 0] * v1[..., 1] - v1[..., 0] * v2[..., 1]) / den
        wc = (v0[..., 0] * v2[..., 1] - v2[..., 0] * v0[..., 1]) / den
    return 1.0 - wb - wc, wb, wc


def _face_grid(tri: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniform `cells` x `cells` grid over [0, 1]^2 listing, per cell, the faces whose UV bounding box (grown by
    1e-9) overlaps it, in file order. tri: [F, 3, 2]. Returns (indptr [cells^2 + 1], faces [M]) in CSR layout."""
    lo = np.clip(np.floor((tri.min(axis=1) - 1e-9) * cells), 0, cells - 1).astype(np.int64)  # [F, 2]
    hi = np.clip(np.floor((tri.max(axis=1) + 1e-9) * cells), 0, cells - 1).astype(np.int64)
    span = hi - lo + 1
    count = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(tri)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # index within each face's block
    cx = lo[face, 0] + k % span[face, 0]
    cy = lo[face, 1] + k // span[face, 0]
    cell = cy * cells + cx
    order = np.lexsort((face, cell))  # by cell, then file order
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=cells * cells))])
    return indptr, face[order]


def _candidates(tri: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, face) pairs that may contain each point: every face whose UV bounding box overlaps the point's cell,
    on one grid per face size (faces of extent <= 2^-k on a 2^k grid, so each overlaps at most 2 x 2 cells and a
    cell holds few faces however unevenly the chart is laid out). Exact: a containing face is always listed.

    tri: [F, 3, 2] chart faces; p: [N, 2] points. Returns (owner [M] point index, face [M] index into tri).
    """
    extent = (tri.max(axis=1) - tri.min(axis=1)).max(axis=1) + 2e-9
    level = np.clip(np.floor(-np.log2(extent)), 0, 12).astype(np.int64)
    owners, faces = [], []
    for k in np.unique(level):
        members = np.flatnonzero(level == k)
        cells = 2 ** int(k)
        indptr, cell_faces = _face_grid(tri[members], cells)
        gx = np.clip(np.floor(p[:, 0] * cells), 0, cells - 1).astype(np.int64)
        gy = np.clip(np.floor(p[:, 1] * cells), 0, cells - 1).astype(np.int64)
        cell = gy * cells + gx
        first, count = indptr[cell], indptr[cell + 1] - indptr[cell]
        owner = np.repeat(np.arange(len(p)), count)
        offset = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
        owners.append(owner)
        faces.append(members[cell_faces[first[owner] + offset]])
    return np.concatenate(owners), np.concatenate(faces)


def iuv_to_vertex(
    atlas: Atlas, vertices: np.ndarray, chart: np.ndarray, u: np.ndarray, v: np.ndarray, block: int = 65536
) -> np.ndarray:
    """Mesh vertex of each (I, U, V) point by DensePose's rule (module docstring).

    Only the faces a grid lists for the point's cell are tested (`_candidates`), and the lowest file index among
    those that contain it wins, which is DensePose's first hit.

    Args:
        vertices: [V, 3] mesh positions (for the nearest corner in 3D). chart: [N] int 1..24; u, v: [N] float.
    Returns:
        [N] int32 mesh vertex ids (-1 where the atlas has no face of chart I).
    """
    from scipy.spatial import cKDTree

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
        corner_tree = cKDTree(atlas.uv[corners])
        for start in range(0, len(rows), block):
            sel = rows[start : start + block]
            p = uv[sel]
            owner, cand = _candidates(tri, p)
            t = tri[cand]  # [pairs, 3, 2]
            w0, w1, w2 = _barycentric(p[owner], t[:, 0], t[:, 1], t[:, 2])
            pair = np.flatnonzero((w0 >= -eps) & (w1 >= -eps) & (w2 >= -eps))
            pair = pair[np.lexsort((cand[pair], owner[pair]))]  # by point, then file order
            pair = pair[np.unique(owner[pair], return_index=True)[1]]  # each point's first containing face
            hit = np.zeros(len(sel), bool)
            hit[owner[pair]] = True
            face = np.zeros((len(sel), 3), np.int64)
            weights = np.zeros((len(sel), 3))
            face[owner[pair]] = faces[cand[pair]]  # [n, 3] atlas corners
            weights[owner[pair]] = np.stack([w0[pair], w1[pair], w2[pair]], axis=1)
            corner_xyz = vertices[atlas.vertex[face]].astype(np.float64)  # [n, 3, 3]
            point = (weights[:, :, None] * corner_xyz).sum(axis=1)
            nearest = np.linalg.norm(corner_xyz - point[:, None], axis=2).argmin(axis=1)
            found = atlas.vertex[face[np.arange(len(sel)), nearest]]
            if not hit.all():  # in no triangle: the chart's corner nearest in UV
                _, near = corner_tree.query(p[~hit])
                found[~hit] = atlas.vertex[corners[near]]
            out[sel] = found
    return out


__all__ = ["UV_KEYS", "Atlas", "atlas_vertex_chart", "iuv_to_vertex", "read_uv_processed"]
