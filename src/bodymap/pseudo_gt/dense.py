"""Dense pseudo ground truth for one annotated person from ~100 sparse points and the CSE estimate
(BodyMap supplementary Sec. 7: dense pseudo-GT beats sparse fine-tuning).

Method (all in template rest-pose space, metres):
1. Annotated points are trusted: their pixels take the annotated vertex, confidence 1.
2. At each point k, the CSE error is a 3D displacement `delta_k = X(v_k) - X(cse(p_k))` on the template. Where
   CSE is roughly right (|delta_k| <= `max_correction_m`) the error is smooth, so each silhouette pixel q moves
   its CSE vertex by the Gaussian-weighted mean of nearby displacements,
   `y_q = X(cse(q)) + sum_k w_qk delta_k / (w_0 + sum_k w_qk)`, `w_qk = exp(-|q - p_k|^2 / 2 sigma^2)`, with a prior
   weight `w_0 = exp(-2)` so the correction fades beyond ~2 sigma from the annotations, then snaps `y_q` to the
   nearest template vertex.
3. Where CSE is badly wrong at the nearest point (|delta_k| > max), pixels within 2 sigma of it take that point's
   vertex (nearest-annotation fill): the label beats an estimate known to be off by more than a limb's width.
4. Silhouette pixels CSE left as background take the value of the nearest filled silhouette pixel.

Confidence per pixel: 1 on annotated points; `score * (0.5 + 0.5 g)` for corrected CSE pixels, `0.5 g` for
nearest-annotation fills (g = exp(-d^2 / 2 sigma^2), d = distance to the nearest point), 0.25 for extrapolated
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from bodymap.determinism import ordered_matmul

PRIOR_WEIGHT = float(np.exp(-2.0))


@dataclass
class PseudoGt:
    """vertex: [H, W] int32 (-1 outside the silhouette); confidence: [H, W] float32 in [0, 1]."""

    vertex: np.ndarray
    confidence: np.ndarray


def nearest_point_fill(silhouette: np.ndarray, points_xy: np.ndarray, points_vertex: np.ndarray) -> np.ndarray:
    """The 'sparse points alone' baseline: every silhouette pixel takes its nearest annotated point's vertex.

    Args:
        silhouette: [H, W] bool; points_xy: [K, 2] float image positions (x, y); points_vertex: [K] int.
    Returns:
        [H, W] int32, -1 outside the silhouette (or everywhere if K == 0).
    """
    out = np.full(silhouette.shape, -1, np.int32)
    ys, xs = np.nonzero(silhouette)
    if len(points_xy) == 0 or len(ys) == 0:
        return out
    _, nearest = cKDTree(points_xy).query(np.stack([xs + 0.5, ys + 0.5], axis=1))
    out[ys, xs] = points_vertex[nearest]
    return out


def dense_pseudo_gt(
    silhouette: np.ndarray,
    points_xy: np.ndarray,
    points_vertex: np.ndarray,
    cse_vertex: np.ndarray,
    cse_score: np.ndarray,
    template_vertices: np.ndarray,
    sigma_px: float = 6.0,
    max_correction_m: float = 0.15,
    vertex_tree: cKDTree | None = None,
) -> PseudoGt:
    """Pseudo-GT for one person (see the module docstring).

    Args:
        silhouette: [H, W] bool person mask. points_xy: [K, 2] float (x, y) pixel positions of annotated points.
        points_vertex: [K] int annotated template vertices. cse_vertex: [H, W] int (-1 background).
        cse_score: [H, W] float CSE foreground probability. template_vertices: [V, 3] rest pose (metres).
        vertex_tree: optional cKDTree over template_vertices (reuse across people).
    """
    h, w = silhouette.shape
    tree = vertex_tree if vertex_tree is not None else cKDTree(template_vertices)
    vertex = np.full((h, w), -1, np.int32)
    confidence = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(silhouette)
    if len(ys) == 0:
        return PseudoGt(vertex, confidence)
    pixels = np.stack([xs + 0.5, ys + 0.5], axis=1)  # (N, 2) pixel centres
    cse_here = cse_vertex[ys, xs]
    points_xy = np.asarray(points_xy, np.float64).reshape(-1, 2)
    points_vertex = np.asarray(points_vertex, np.int64)
    kept = np.zeros(len(ys), bool)

    if len(points_xy):
        px = np.clip(points_xy[:, 0].astype(int), 0, w - 1)
        py = np.clip(points_xy[:, 1].astype(int), 0, h - 1)
        cse_at_points = cse_vertex[py, px]
        delta = template_vertices[points_vertex] - template_vertices[np.maximum(cse_at_points, 0)]
        good = (cse_at_points >= 0) & (np.linalg.norm(delta, axis=1) <= max_correction_m)
        dist = np.linalg.norm(pixels[:, None, :] - points_xy[None], axis=2)  # (N, K)
        nearest = dist.argmin(axis=1)
        near_d = dist[np.arange(len(ys)), nearest]
        g = np.exp(-(near_d**2) / (2 * sigma_px**2))

        # Step 2: smooth correction of the CSE field around trustworthy points.
        weights = np.exp(-(dist**2) / (2 * sigma_px**2)) * good[None]  # (N, K)
        # Not `weights @ delta`: BLAS sums over the points in a CPU-dependent order (bodymap.determinism).
        shift = ordered_matmul(weights, delta) / (PRIOR_WEIGHT + weights.sum(axis=1, keepdims=True))
        has_cse = cse_here >= 0
        if has_cse.any():
            _, snapped = tree.query(template_vertices[cse_here[has_cse]] + shift[has_cse])
            vertex[ys[has_cse], xs[has_cse]] = snapped
            confidence[ys[has_cse], xs[has_cse]] = cse_score[ys[has_cse], xs[has_cse]] * (0.5 + 0.5 * g[has_cse])
            kept[has_cse] = True

        # Step 3: near a point where CSE is far off, the point's own vertex wins.
        override = ~good[nearest] & (near_d <= 2 * sigma_px)
        vertex[ys[override], xs[override]] = points_vertex[nearest[override]]
        confidence[ys[override], xs[override]] = 0.5 * g[override]
        kept |= override
    else:
        has_cse = cse_here >= 0
        vertex[ys[has_cse], xs[has_cse]] = cse_here[has_cse]
        confidence[ys[has_cse], xs[has_cse]] = cse_score[ys[has_cse], xs[has_cse]] * 0.5
        kept = has_cse

    # Step 4: extrapolate into silhouette pixels nothing covered, from the nearest covered pixel.
    if (~kept).any() and kept.any():
        covered = np.zeros((h, w), bool)
        covered[ys[kept], xs[kept]] = True
        _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
        fill_y, fill_x = ys[~kept], xs[~kept]
        vertex[fill_y, fill_x] = vertex[iy[fill_y, fill_x], ix[fill_y, fill_x]]
        confidence[fill_y, fill_x] = 0.25

    # Step 1 last, so nothing overwrites a label.
    if len(points_xy):
        inside = silhouette[py, px]
        vertex[py[inside], px[inside]] = points_vertex[inside]
        confidence[py[inside], px[inside]] = 1.0
    return PseudoGt(vertex, confidence)
