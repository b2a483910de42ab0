"""Point metrics on an image-level vertex prediction: geodesic accuracy (cm) and pixel-window accuracy (px).

- Geodesic accuracy (Slim DensePose, Sec. 5): a GT point with GT vertex v is correct within c cm when the vertex
  predicted at its pixel lies within c cm of v geodesically. A background prediction is wrong.
- Pixel-window accuracy (BodyMap, Table 2): a GT point p with GT vertex v is correct within w px when some pixel q
  with ||q - p|| <= w (pixel centres) predicts a vertex u with d(u, v) <= ε. ε is the template's mean edge length by
  default (about 1 cm on Anny): "the right vertex, or one next to it", so w measures how far the prediction is
  displaced in the image rather than on the body.

Points are pixels: dense GT uses every foreground pixel; a sparse DensePose-COCO point uses the pixel holding its
image position. Both metrics are reported in percent over all points and per part group (`PART_GROUPS`).
"""

from __future__ import annotations

import numpy as np

from bodymap.densepose import PART_GROUPS
from bodymap.template.geodesic import Geodesics


def geodesic_error(gt_vertex: np.ndarray, pred_vertex: np.ndarray, geodesics: Geodesics) -> np.ndarray:
    """d(gt, pred) in metres for [N] int vertex ids; inf where either is -1. Returns [N] float64."""
    out = np.full(len(gt_vertex), np.inf)
    ok = (gt_vertex >= 0) & (pred_vertex >= 0)
    out[ok] = geodesics.pair(gt_vertex[ok], pred_vertex[ok])
    return out


class VertexBalls:
    """For each vertex v, the vertices u with d(v, u) <= radius, filled on demand from `geodesics.rows` (so it agrees
    exactly with `geodesics.pair`): a padded [V, K] int32 table (-1 pads, members first) and sizes [V]."""

    def __init__(self, geodesics: Geodesics, radius: float, chunk: int = 512) -> None:
        self.geodesics = geodesics
        self.radius = float(radius)
        self.chunk = chunk
        self.known = np.zeros(geodesics.num_vertices, bool)
        self.sizes = np.zeros(geodesics.num_vertices, np.int64)
        self.table = np.full((geodesics.num_vertices, 1), -1, np.int32)

    def _fill(self, vertices: np.ndarray) -> None:
        todo = np.unique(vertices[~self.known[vertices]])
        for start in range(0, len(todo), self.chunk):
            rows = todo[start : start + self.chunk]
            near = self.geodesics.rows(rows) <= self.radius  # [n, V]
            sizes = near.sum(axis=1)
            if sizes.max(initial=0) > self.table.shape[1]:
                grown = np.full((len(self.table), int(sizes.max())), -1, np.int32)
                grown[:, : self.table.shape[1]] = self.table
                self.table = grown
            r, c = np.nonzero(near)
            slot = np.arange(len(r)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            self.table[rows[r], slot] = c
            self.sizes[rows] = sizes
            self.known[rows] = True

    def members(self, vertices: np.ndarray) -> np.ndarray:
        """[N, K] int32 ball members of each vertex id in [N] (>= 0), -1 padded."""
        self._fill(vertices)
        return self.table[vertices]

    def pairs(self, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (i, u) with u in the ball of vertices[i]: (i [Q] int64, u [Q] int32), grouped by i ascending."""
        self._fill(vertices)
        sizes = self.sizes[vertices]
        index = np.repeat(np.arange(len(vertices)), sizes)
        slot = np.arange(len(index)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return index, self.table[vertices[index], slot]


_CANDIDATES = 4_000_000  # (point, pixel) candidates per chunk in window_distance, to bound memory


def window_distance(
    x: np.ndarray, y: np.ndarray, gt_vertex: np.ndarray, pred: np.ndarray, balls: VertexBalls, max_radius: float
) -> np.ndarray:
    """Distance in pixels from each GT point to the nearest pixel predicting a vertex within ε of its GT vertex.

    For each point and each vertex u of its ε-ball, every pixel predicting u is a candidate (pixels sorted by
    predicted vertex, so they are one contiguous range); the nearest candidate gives the distance.

    Args:
        x, y: [N] int pixel of each point; gt_vertex: [N] int (>= 0); pred: [H, W] int image-level prediction.
        max_radius: largest window of interest; farther (or no) such pixels give inf.
    Returns:
        [N] float64 pixels (square roots of integers, so `<= w` compares exactly).
    """
    out = np.full(len(x), np.inf)
    flat = pred.ravel()
    fg = np.flatnonzero(flat >= 0)
    if len(fg) == 0 or len(x) == 0:
        return out
    order = np.argsort(flat[fg], kind="stable")
    pixels, predicted = fg[order], flat[fg][order]
    point, member = balls.pairs(np.asarray(gt_vertex))
    lo = np.searchsorted(predicted, member, side="left")
    counts = np.searchsorted(predicted, member, side="right") - lo
    cum = np.concatenate([[0], np.cumsum(counts)])
    best = np.full(len(x), np.iinfo(np.int64).max)
    width = pred.shape[1]
    start = 0
    while start < len(point):
        stop = max(start + 1, int(np.searchsorted(cum, cum[start] + _CANDIDATES, side="right")) - 1)
        n = counts[start:stop]
        candidate = np.repeat(lo[start:stop] - (cum[start:stop] - cum[start]), n) + np.arange(cum[stop] - cum[start])
        owner = np.repeat(point[start:stop], n)
        qy, qx = np.divmod(pixels[candidate], width)
        np.minimum.at(best, owner, (qx - x[owner]) ** 2 + (qy - y[owner]) ** 2)
        start = stop
    reached = best <= max_radius**2
    out[reached] = np.sqrt(best[reached].astype(np.float64))
    return out


def rates(correct: np.ndarray, chart: np.ndarray, name: str) -> dict[str, float | None]:
    """`name`: percent of True in [N] bool, plus `name_<group>` over the points whose chart is in each part group
    (None for a group without points)."""
    out: dict[str, float | None] = {name: 100.0 * float(correct.mean()) if len(correct) else None}
    for group, charts in PART_GROUPS.items():
        sel = np.isin(chart, charts)
        out[f"{name}_{group}"] = 100.0 * float(correct[sel].mean()) if sel.any() else None
    return out


def cm_key(cm: float) -> str:
    return f"cm_{cm:g}"


def window_key(px: int) -> str:
    return f"window_{px}px"


class PointAccumulator:
    """Collects per-point geodesic errors and window distances image by image; `metrics()` turns them into rates."""

    def __init__(
        self,
        geodesics: Geodesics,
        *,
        epsilon_m: float,
        windows_px: tuple[int, ...],
        cm: tuple[float, ...],
        balls: VertexBalls | None = None,
    ) -> None:
        """balls: a `VertexBalls` of radius epsilon_m to share between accumulators (built when None)."""
        self.geodesics = geodesics
        self.balls = balls if balls is not None else VertexBalls(geodesics, epsilon_m)
        if self.balls.radius != float(epsilon_m):
            raise ValueError(f"balls have radius {self.balls.radius}, expected epsilon_m = {epsilon_m}")
        self.windows = tuple(windows_px)
        self.cm = tuple(cm)
        self.errors: list[np.ndarray] = []
        self.window: list[np.ndarray] = []
        self.charts: list[np.ndarray] = []

    def add(self, x: np.ndarray, y: np.ndarray, gt_vertex: np.ndarray, chart: np.ndarray, pred: np.ndarray) -> None:
        """One image: points x, y [N] int pixels, gt_vertex [N] int32 (>= 0), chart [N] uint8; pred [H, W] int32."""
        keep = gt_vertex >= 0
        x, y, gt_vertex, chart = x[keep], y[keep], gt_vertex[keep], chart[keep]
        self.errors.append(geodesic_error(gt_vertex, pred[y, x], self.geodesics))
        self.window.append(window_distance(x, y, gt_vertex, pred, self.balls, float(max(self.windows))))
        self.charts.append(chart)

    @property
    def num_points(self) -> int:
        return int(sum(len(c) for c in self.charts))

    def metrics(self) -> dict[str, float | None]:
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        window = np.concatenate(self.window) if self.window else np.zeros(0)
        chart = np.concatenate(self.charts) if self.charts else np.zeros(0, np.uint8)
        out: dict[str, float | None] = {}
        for w in self.windows:
            out.update(rates(window <= w, chart, window_key(w)))
        for c in self.cm:
            out.update(rates(errors <= c / 100.0, chart, cm_key(c)))
        return out


__all__ = [
    "PointAccumulator",
    "VertexBalls",
    "cm_key",
    "geodesic_error",
    "rates",
    "window_distance",
    "window_key",
]
