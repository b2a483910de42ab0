"""Exact optical flow between two rendered frames of a sequence, from the motion of the surface points.

A pixel of frame a sees an exact surface point: a render-mesh face and barycentrics. The same face and barycentrics
on frame b's vertices give where that material point went; projecting it with b's camera gives the flow. It is
valid when the point lands inside b and b sees it there: same person, and b's depth at that pixel agrees with the
point's depth (otherwise it is occluded in b). Slim DensePose (Sec. 4) propagates labels along such flow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bodymap.render.renderer import Frame


def exact_flow(a: Frame, b: Frame, tolerance_m: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Flow from frame a to frame b, for the pixels of a.

    Person k of a must be person k of b (a sequence keeps its people in order).

    Args:
        tolerance_m: depth agreement for visibility, also relative (2% of the depth) for distant people.
    Returns:
        (flow [H, W, 2] float32 (dx, dy) pixels, 0 where invalid; valid [H, W] bool).
    """
    h, w = a.person.shape
    flow = np.zeros((h, w, 2), np.float32)
    valid = np.zeros((h, w), bool)
    for i, pb in enumerate(b.people):
        rows, cols = np.nonzero(a.person == i)
        if len(rows) == 0:
            continue
        f = a.face[rows, cols]
        bary = a.bary[rows, cols]
        # Three multiply-adds in a fixed order (not einsum's CPU-dependent loops), then a BLAS-free projection:
        # flow is float32 and shows the last bit of every step.
        tri = pb.mesh.faces[f]
        points = bary[:, :1] * pb.vertices[tri[:, 0]] + bary[:, 1:2] * pb.vertices[tri[:, 1]]
        points = points + bary[:, 2:] * pb.vertices[tri[:, 2]]
        xy, z = b.camera.project(points)
        fx, fy = xy[:, 0] - (cols + 0.5), xy[:, 1] - (rows + 0.5)
        px, py = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
        inside = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        px, py = np.clip(px, 0, w - 1), np.clip(py, 0, h - 1)
        seen = (b.person[py, px] == i) & (np.abs(b.depth[py, px] - z) < np.maximum(tolerance_m, 0.02 * z))
        flow[rows, cols, 0], flow[rows, cols, 1] = fx, fy
        valid[rows, cols] = inside & seen
    flow[~valid] = 0.0
    return flow, valid


__all__ = ["exact_flow"]
