"""Slim DensePose label propagation along optical flow (Neverova et al., CVPR 2019, Secs. 3.2 and 5.4).

Sparse annotations of a labelled frame move to neighbouring frames along flow *estimated* with OpenCV (DIS or
Farnebäck) — never the renderer's exact flow — and a point is dropped when its forward-backward error exceeds
`max_fb_error_px` (5 px in the paper), when it leaves the image, or when it lands off the person.
"""

from __future__ import annotations

import cv2
import numpy as np


def estimate_flow(first: np.ndarray, second: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense optical flow from `first` to `second`.

    Args:
        first, second: [H, W, 3] uint8 RGB frames. method: 'dis' (DIS, medium preset) or 'farneback'.
    Returns:
        [H, W, 2] float32 (dx, dy): pixel (x, y) of `first` moves to (x + dx, y + dy) in `second`.
    """
    a = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(a, b, None).astype(np.float32)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0).astype(np.float32)
    raise ValueError(f"unknown flow method {method!r}; expected 'dis' or 'farneback'")


def sample_flow(flow: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Bilinear flow at sub-pixel positions. flow: [H, W, 2]; points_xy: [K, 2] (x, y) → [K, 2]."""
    # Pixel centres are at integer + 0.5; remap's coordinates address centres at integers.
    map_x = (points_xy[:, 0] - 0.5).astype(np.float32).reshape(-1, 1)
    map_y = (points_xy[:, 1] - 0.5).astype(np.float32).reshape(-1, 1)
    out = cv2.remap(flow, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 2)


def propagate_points(
    points_xy: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    max_fb_error_px: float = 5.0,
    target_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Move points from frame t to t' and keep those passing the forward-backward check.

    Args:
        points_xy: [K, 2] positions in frame t. forward: [H, W, 2] flow t → t'; backward: flow t' → t.
        target_mask: optional [H, W] bool person mask of frame t'; points landing off it are dropped.
    Returns:
        (positions in t' [K, 2] float, keep [K] bool).
    """
    h, w = forward.shape[:2]
    points_xy = np.asarray(points_xy, np.float64).reshape(-1, 2)
    moved = points_xy + sample_flow(forward, points_xy)
    back = moved + sample_flow(backward, moved)
    error = np.linalg.norm(back - points_xy, axis=1)
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < w) & (moved[:, 1] >= 0) & (moved[:, 1] < h)
    keep = inside & (error <= max_fb_error_px)
    if target_mask is not None:
        xi = np.clip(moved[:, 0].astype(int), 0, w - 1)
        yi = np.clip(moved[:, 1].astype(int), 0, h - 1)
        keep &= target_mask[yi, xi]
    return moved, keep
