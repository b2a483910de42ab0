"""Geodesic distances on the template surface with O(1) lookup of any pair.

Distances come from the heat method (Crane et al. 2013, potpourri3d's `MeshHeatMethodDistanceSolver`). Two
storages share one lookup interface (`Geodesics`):

- dense: the full [V, V] float16 matrix, symmetrised ((D + D^T) / 2), memory-mapped from `geodesics.npy`.
  For Anny's 13,348 body vertices that is 356 MB and ~80 s of solves on one core (parallel over `workers`).
  float16 keeps 1 mm resolution up to 2 m.
- landmarks: K farthest-point samples; [K, V] float16 distances from every sample. A pair (i, j) is looked up
  as the mean of d(s(i), j) and d(s(j), i), s(.) the nearest sample, so the error is bounded by the sampling
  radius (reported in the summary). For big templates or quick tests.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import tempfile
from pathlib import Path

import numpy as np

from bodymap.log import progress

log = logging.getLogger(__name__)

_SOLVER = None


def _init_worker(vertices: np.ndarray, faces: np.ndarray) -> None:
    global _SOLVER
    import potpourri3d as pp3d

    _SOLVER = pp3d.MeshHeatMethodDistanceSolver(vertices, faces)


def _solve_rows(sources: np.ndarray) -> np.ndarray:
    return np.stack([_SOLVER.compute_distance(int(s)) for s in sources]).astype(np.float16)


def heat_distances(
    vertices: np.ndarray, faces: np.ndarray, sources: np.ndarray, workers: int = 1, out: np.ndarray | None = None
) -> np.ndarray:
    """Heat-method distances from each source vertex to all vertices.

    Args:
        vertices: [V, 3] float; faces: [F, 3] int; sources: [S] int vertex ids.
        workers: processes to spread the solves over.
        out: optional [S, V] float16 array (e.g. a memmap) to fill.
    Returns:
        [S, V] float16 metres (row s = distances from sources[s]).
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if out is None:
        out = np.empty((len(sources), len(vertices)), np.float16)
    chunk = 64
    blocks = [sources[i : i + chunk] for i in range(0, len(sources), chunk)]
    starts = list(range(0, len(sources), chunk))
    if workers <= 1:
        _init_worker(vertices, faces)
        for start, block in progress(zip(starts, blocks, strict=True), "geodesics", total=len(blocks), logger=log):
            out[start : start + len(block)] = _solve_rows(block)
        return out
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(vertices, faces)) as pool:
        results = pool.imap(_solve_rows, blocks)
        for start, rows in progress(zip(starts, results, strict=False), "geodesics", total=len(blocks), logger=log):
            out[start : start + len(rows)] = rows
    return out


def farthest_point_samples(vertices: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k vertex ids spread over the mesh by Euclidean farthest-point sampling. Returns [k] int64."""
    rng = np.random.default_rng(seed)
    k = min(k, len(vertices))
    chosen = np.empty(k, np.int64)
    chosen[0] = rng.integers(len(vertices))
    dist = np.linalg.norm(vertices - vertices[chosen[0]], axis=1)
    for i in range(1, k):
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(vertices - vertices[chosen[i]], axis=1))
    return chosen


def build_dense(vertices: np.ndarray, faces: np.ndarray, path: Path, workers: int = 1) -> None:
    """Compute the symmetrised dense matrix into `path` (.npy, float16), blockwise so memory stays ~2 x V^2 bytes."""
    n = len(vertices)
    path = Path(path)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".geodesics.", suffix=".npy", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        mat = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.float16, shape=(n, n))
        heat_distances(vertices, faces, np.arange(n), workers=workers, out=mat)
        block = 2048
        for i in range(0, n, block):
            for j in range(i, n, block):
                a = mat[i : i + block, j : j + block].astype(np.float32)
                b = mat[j : j + block, i : i + block].astype(np.float32)
                sym = (a + b.T) / 2.0
                mat[i : i + block, j : j + block] = sym
                mat[j : j + block, i : i + block] = sym.T
        np.fill_diagonal(mat, 0.0)
        mat.flush()
        del mat
        tmp_path.chmod(0o644)
        tmp_path.replace(path)
    finally:
        tmp_path.unlink(missing_ok=True)


def build_landmarks(vertices: np.ndarray, faces: np.ndarray, k: int, workers: int = 1) -> dict[str, np.ndarray]:
    """Landmark storage: samples [K], distances [K, V] float16, nearest sample per vertex [V] and its distance."""
    samples = farthest_point_samples(vertices, k)
    dist = heat_distances(vertices, faces, samples, workers=workers)
    nearest = np.argmin(dist, axis=0).astype(np.int32)
    radius = dist[nearest, np.arange(len(vertices))].astype(np.float32)
    return {"samples": samples.astype(np.int32), "distances": dist, "nearest": nearest, "radius": radius}


class Geodesics:
    """O(1) geodesic distance lookup between template vertices, in metres (float32 results).

    Use `Geodesics.load(directory)`; `pair(i, j)` broadcasts like numpy, `rows(i)` gives all distances from i.
    """

    def __init__(
        self,
        dense: np.ndarray | None = None,
        samples: np.ndarray | None = None,
        distances: np.ndarray | None = None,
        nearest: np.ndarray | None = None,
        radius: np.ndarray | None = None,
    ) -> None:
        if dense is None and distances is None:
            raise ValueError("Geodesics needs either a dense matrix or landmark distances")
        self.dense = dense
        self.samples, self.distances, self.nearest, self.radius = samples, distances, nearest, radius
        self.num_vertices = int(dense.shape[0] if dense is not None else distances.shape[1])
        self.mode = "dense" if dense is not None else "landmarks"

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> Geodesics:
        directory = Path(directory)
        dense_path = directory / "geodesics.npy"
        if dense_path.exists():
            return cls(dense=np.load(dense_path, mmap_mode="r" if mmap else None))
        data = np.load(directory / "geodesics_landmarks.npz")
        return cls(**{k: data[k] for k in ("samples", "distances", "nearest", "radius")})

    def pair(self, i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
        """d(i, j) for broadcastable vertex-id arrays i, j (int, any shape). Returns float32 of the broadcast shape."""
        i, j = np.broadcast_arrays(np.asarray(i, np.int64), np.asarray(j, np.int64))
        if self.dense is not None:
            if i.size == 0:
                return np.zeros(i.shape, np.float32)
            return np.asarray(self.dense[i.ravel(), j.ravel()], np.float32).reshape(i.shape)
        d = 0.5 * (
            self.distances[self.nearest[i], j].astype(np.float32)
            + self.distances[self.nearest[j], i].astype(np.float32)
        )
        return np.where(i == j, 0.0, d).astype(np.float32)

    def rows(self, i: np.ndarray) -> np.ndarray:
        """Distances from each vertex in i ([N] int) to every vertex: [N, V] float32."""
        i = np.asarray(i, np.int64)
        if self.dense is not None:
            # Sorted reads are much faster on a memmap; undo the order afterwards.
            order = np.argsort(i, kind="stable")
            out = np.empty((len(i), self.num_vertices), np.float32)
            out[order] = self.dense[i[order]]
            return out
        d = 0.5 * (
            self.distances[self.nearest[i]].astype(np.float32) + self.distances[:, i][self.nearest].T.astype(np.float32)
        )
        d[np.arange(len(i)), i] = 0.0
        return d
