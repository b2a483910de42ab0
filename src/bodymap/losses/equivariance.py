"""Slim DensePose's equivariance loss (Neverova et al., CVPR 2019, Eq. 2 and Sec. 3.2.2).

For two views I, I' related by a dense warp (optical flow between video frames, or a synthetic affine / TPS warp
of one image), the network's features should move with the pixels: the loss is `1 - cos(f(I)(p), f(I')(p + w(p)))`
averaged over pixels p where the warp is valid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def warp_features(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `features` of view B at p + flow(p) for every pixel p of view A.

    Args:
        features: [B, C, H, W] features of view B. flow: [B, H, W, 2] (dx, dy) pixels, from A to B.
    Returns:
        [B, C, H, W] features aligned with view A.
    """
    _, _, h, w = features.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = xs[None] + flow[..., 0]
    y = ys[None] + flow[..., 1]
    # grid_sample wants [-1, 1] coordinates of pixel centres (align_corners=True: -1 is pixel 0, 1 is pixel W-1).
    grid = torch.stack([2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0], dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def equivariance_loss(
    features_a: torch.Tensor, features_b: torch.Tensor, flow_ab: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean of 1 - cosine similarity between A's features and B's features warped back onto A.

    Args:
        features_a, features_b: [B, C, H, W]. flow_ab: [B, H, W, 2] pixels from A to B. valid: [B, H, W] bool/float
            (the warp is defined and the pixel stays inside B).
    Returns:
        scalar; 0 for exactly equivariant features.
    """
    if features_a.shape[-2:] != flow_ab.shape[1:3]:
        # Features at a stride: resample the flow (and scale its vectors) to the feature grid.
        scale = features_a.shape[-1] / flow_ab.shape[2]
        flow_ab = (
            F.interpolate(flow_ab.permute(0, 3, 1, 2), size=features_a.shape[-2:], mode="bilinear").permute(0, 2, 3, 1)
            * scale
        )
        valid = F.interpolate(valid[:, None].float(), size=features_a.shape[-2:], mode="nearest")[:, 0]
    warped = warp_features(features_b, flow_ab)
    cosine = F.cosine_similarity(features_a, warped, dim=1, eps=1e-6)  # (B, H, W)
    weight = valid.float()
    return ((1.0 - cosine) * weight).sum() / weight.sum().clamp_min(1.0)


def random_affine_flow(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    max_rotation_deg: float = 10.0,
    max_scale: float = 0.1,
    max_shift: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random similarity warp per image, as the synthetic (non-video) variant of the loss.

    Returns:
        (theta [B, 2, 3] for `F.affine_grid` mapping B's normalised coords to A's, flow [B, H, W, 2] A → B pixels).
    """
    u = torch.rand(batch, 4, generator=generator) * 2.0 - 1.0
    angle = u[:, 0] * math.radians(max_rotation_deg)
    scale = 1.0 + u[:, 1] * max_scale
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * max_shift * 2], 1), torch.stack([sin, cos, u[:, 3] * max_shift * 2], 1)], 1
    )  # (B, 2, 3): for every output (B) pixel, where to read in A
    # Flow A → B: invert the affine for A's pixel grid.
    full = torch.cat([theta, torch.tensor([0.0, 0.0, 1.0]).expand(batch, 1, 3)], dim=1)
    inverse = torch.linalg.inv(full)[:, :2]
    grid = F.affine_grid(inverse, (batch, 1, height, width), align_corners=True)  # A pixel → B normalised coords
    xs = (grid[..., 0] + 1.0) * (width - 1) / 2.0
    ys = (grid[..., 1] + 1.0) * (height - 1) / 2.0
    base_y, base_x = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    flow = torch.stack([xs - base_x, ys - base_y], dim=-1)
    return theta, flow
