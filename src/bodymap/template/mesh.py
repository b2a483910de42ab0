"""`BodyTemplate`: the template mesh and everything per vertex that later stages speak in.

Stored as a directory: `template.npz` (arrays below), `template.json` (metadata and build figures) and
`geodesics.npy` or `geodesics_landmarks.npz` (see `bodymap.template.geodesic`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from bodymap.errors import BodymapError
from bodymap.io import save_npz, write_json
from bodymap.template.atlas import Atlas
from bodymap.template.atlas import iuv_to_vertex as atlas_iuv_to_vertex
from bodymap.template.geodesic import Geodesics

_ARRAYS = (
    "vertices",
    "faces",
    "chart",
    "part",
    "uv",
    "colors",
    "symmetry",
    "lbo_basis",
    "lbo_eigenvalues",
    "vertex_area",
    "template_to_full",
    "keypoint_weights",
    "skin_weights",
    "skin_bones",
)
# DensePose's atlas (bodymap.template.atlas), present only on templates built from SMPL + DensePose's UV data.
_ATLAS_ARRAYS = ("atlas_faces", "atlas_face_chart", "atlas_uv", "atlas_vertex")


@dataclass
class BodyTemplate:
    """A body template mesh with DensePose charts, the BodyMap colour code and symmetry, in the body frame.

    Attributes:
        vertices: [V, 3] float32 rest pose, metres, body frame (x = person's left, y = up, z = forward).
        faces: [F, 3] int32.
        chart: [V] uint8 DensePose fine chart I (1..24). part: [V] uint8 coarse part (1..14).
        uv: [V, 2] float32 chart coordinates in [0, 1].
        colors: [V, 3] uint8 unique colour code. symmetry: [V] int32 mirror vertex (an involution).
        lbo_basis: [V, k] float32 Laplace-Beltrami eigenvectors (M-orthonormal); lbo_eigenvalues: [k] float64.
        vertex_area: [V] float32 lumped mass (m^2).
        template_to_full: [V] int32 index of each template vertex in the posable body mesh (Anny), or empty.
        keypoint_weights: [K, N] float32 keypoint regression over the posable mesh, or empty.
        skin_weights, skin_bones: [V, S] float32 / int32 skinning of the template vertices, or empty.
        atlas_faces [Fa, 3] int32, atlas_face_chart [Fa] uint8, atlas_uv [A, 2] float64, atlas_vertex [A] int32:
            DensePose's chart atlas when the template was built from SMPL + `UV_Processed.mat`, else empty. With it,
            (I, U, V) follows DensePose's rule and real DensePose-COCO points (no `ref_model`) are read.
        meta: name, source, bone labels, keypoint names, body-model configuration and build figures.
    """

    vertices: np.ndarray
    faces: np.ndarray
    chart: np.ndarray
    part: np.ndarray
    uv: np.ndarray
    colors: np.ndarray
    symmetry: np.ndarray
    lbo_basis: np.ndarray
    lbo_eigenvalues: np.ndarray
    vertex_area: np.ndarray
    template_to_full: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    keypoint_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    skin_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    skin_bones: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    atlas_faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    atlas_face_chart: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    atlas_uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    atlas_vertex: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    meta: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None
    _geodesics: Geodesics | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        return str(self.meta.get("name", "template"))

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @cached_property
    def edges(self) -> np.ndarray:
        """[E, 2] unique undirected edges."""
        from bodymap.template.charts import edges_of

        return edges_of(self.faces)

    @cached_property
    def mean_edge_length(self) -> float:
        """Mean edge length in metres: the pixel-window metric's geodesic tolerance epsilon."""
        e = self.edges
        return float(np.linalg.norm(self.vertices[e[:, 0]] - self.vertices[e[:, 1]], axis=1).mean())

    @property
    def geodesics(self) -> Geodesics:
        """The geodesic lookup (memory-mapped on first use)."""
        if self._geodesics is None:
            if self.directory is None:
                raise BodymapError("this template was not loaded from a directory, so it has no geodesics")
            self._geodesics = Geodesics.load(self.directory)
        return self._geodesics

    @geodesics.setter
    def geodesics(self, value: Geodesics) -> None:
        self._geodesics = value

    # --------------------------------------------------------------------------------------- colour code
    @cached_property
    def _colour_tree(self) -> cKDTree:
        return cKDTree(self.colors.astype(np.float32))

    def decode_colors(self, rgb: np.ndarray) -> np.ndarray:
        """Vertex whose code colour is nearest to each colour. rgb: [..., 3] (uint8 or float 0..255) -> [...] int32."""
        rgb = np.asarray(rgb)
        _, idx = self._colour_tree.query(rgb.reshape(-1, 3).astype(np.float32), workers=-1)
        return idx.astype(np.int32).reshape(rgb.shape[:-1])

    # --------------------------------------------------------------------------------------------- charts
    @property
    def has_densepose_atlas(self) -> bool:
        """Whether (I, U, V) here are DensePose's SMPL atlas coordinates (the template came from SMPL + UV data)."""
        return len(self.atlas_faces) > 0

    @cached_property
    def atlas(self) -> Atlas:
        if not self.has_densepose_atlas:
            raise BodymapError(f"template {self.name!r} has no DensePose atlas (not built from DensePose UV data)")
        return Atlas(self.atlas_faces, self.atlas_face_chart, self.atlas_uv, self.atlas_vertex)

    @cached_property
    def _uv_trees(self) -> dict[int, tuple[np.ndarray, cKDTree]]:
        trees = {}
        for c in np.unique(self.chart):
            ids = np.flatnonzero(self.chart == c)
            trees[int(c)] = (ids, cKDTree(self.uv[ids].astype(np.float64)))
        return trees

    def iuv_to_vertex(self, chart: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Template vertex of each (I, U, V) point on this template's own atlas.

        On a template built from DensePose's UV data: DensePose's rule (the point in the chart-I UV triangle that
        holds it, then the nearest corner; `bodymap.template.atlas`). Otherwise the charts are the template's own
        per-vertex parameterisation and the answer is the vertex nearest in (U, V) inside chart I, which is only
        meaningful for points written on that parameterisation (`ref_model` = this template's name).

        Args:
            chart: [N] int chart ids 1..24; u, v: [N] float in [0, 1].
        Returns:
            [N] int32 vertex ids (-1 where the chart does not exist on this template).
        """
        if self.has_densepose_atlas:
            return atlas_iuv_to_vertex(self.atlas, self.vertices, chart, u, v)
        chart = np.asarray(chart).astype(np.int64).ravel()
        uv = np.stack([np.asarray(u, np.float64).ravel(), np.asarray(v, np.float64).ravel()], axis=1)
        out = np.full(len(chart), -1, np.int32)
        for c in np.unique(chart):
            if int(c) not in self._uv_trees:
                continue
            ids, tree = self._uv_trees[int(c)]
            sel = chart == c
            _, nearest = tree.query(uv[sel])
            out[sel] = ids[nearest]
        return out

    # ------------------------------------------------------------------------------------------- storage
    def save(self, directory: str | Path) -> None:
        """Write template.npz and template.json into `directory` (geodesics are written by the builder)."""
        directory = Path(directory)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        if self.has_densepose_atlas:
            arrays.update({name: getattr(self, name) for name in _ATLAS_ARRAYS})
        save_npz(directory / "template.npz", **arrays)
        write_json(directory / "template.json", self.meta)

    @classmethod
    def load(cls, directory: str | Path) -> BodyTemplate:
        """Load a template directory written by `bodymap template`."""
        directory = Path(directory)
        npz, meta = directory / "template.npz", directory / "template.json"
        if not npz.exists():
            raise BodymapError(f"{npz}: no template here; run `bodymap template` first (or check the path)")
        with np.load(npz) as data:
            missing = [n for n in _ARRAYS if n not in data]
            if missing:
                raise BodymapError(f"{npz}: missing arrays {missing}; rebuild the template")
            arrays = {n: data[n] for n in _ARRAYS}
            arrays.update({n: data[n] for n in _ATLAS_ARRAYS if n in data})
        return cls(**arrays, meta=json.loads(meta.read_text()) if meta.exists() else {}, directory=directory)

    def summary(self) -> dict[str, Any]:
        """Counts worth printing: V, F, charts present, mean edge length."""
        return {
            "vertices": self.num_vertices,
            "faces": len(self.faces),
            "charts": len(np.unique(self.chart)),
            "mean_edge_length_m": round(self.mean_edge_length, 6),
            "lbo_k": int(self.lbo_basis.shape[1]),
        }


assert set(_ARRAYS + _ATLAS_ARRAYS) <= {f.name for f in fields(BodyTemplate)}
