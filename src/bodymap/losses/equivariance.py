"""Slim DensePose's equivariance loss (Neverova et al., CVPR 2019, Eq. 2 and Sec. 3.2.2).

For two views I, I' related by a dense warp (optical flow between video frames, or a synthetic thin-plate-spline
warp of one image, `random_tps_warp`), the network's features should move with the pixels: the loss is
`1 - cos(f(I)(p), f(I')(p + w(p)))` averaged over pixels p where the warp is valid.
"""

from __future__ import annotations

from collections.abc import Callable

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


def _tps_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2 between points a [..., N, 2] and b [..., M, 2] -> [..., N, M] (0 at r = 0)."""
    r2 = ((a[..., :, None, :] - b[..., None, :, :]) ** 2).sum(-1)
    return r2 * torch.log(r2.clamp_min(1e-30))


def tps_grid(control: torch.Tensor, target: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The thin-plate spline through `control` -> `target`, evaluated at every pixel (Bookstein 1989).

    f(q) = a0 + A q + sum_i w_i U(|q - c_i|), with (w, a) solving the interpolation system, so f(c_i) = t_i exactly
    and f is the smoothest (least bending energy) such map; f is the identity when target == control.

    Args:
        control: [N, 2] (x, y) control points in normalised coordinates ([-1, 1], align_corners=True).
        target: [B, N, 2] where each control point maps to, same coordinates.
    Returns:
        [B, H, W, 2] float32 f(q) at every pixel q, in normalised coordinates (a `grid_sample` grid).
    """
    c = control.double()
    n = c.shape[0]
    p = torch.cat([torch.ones(n, 1, dtype=c.dtype), c], dim=1)  # (N, 3)
    system = torch.zeros(n + 3, n + 3, dtype=c.dtype)
    system[:n, :n], system[:n, n:], system[n:, :n] = _tps_kernel(c, c), p, p.T
    rhs = torch.cat([target.double(), torch.zeros(target.shape[0], 3, 2, dtype=c.dtype)], dim=1)  # (B, N + 3, 2)
    coef = torch.linalg.solve(system, rhs)  # (B, N + 3, 2): w then (a0, a_x, a_y)
    ys, xs = torch.meshgrid(
        torch.linspace(-1.0, 1.0, height, dtype=c.dtype), torch.linspace(-1.0, 1.0, width, dtype=c.dtype), indexing="ij"
    )
    q = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # (H * W, 2)
    basis = torch.cat([_tps_kernel(q, c), torch.ones(len(q), 1, dtype=c.dtype), q], dim=1)  # (H * W, N + 3)
    return (basis @ coef).reshape(-1, height, width, 2).float()


def random_tps_warp(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    grid_points: int = 4,
    max_displacement: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random thin-plate-spline warp per image: Slim DensePose's synthetic alternative to video flow (Sec. 3.2.2).

    Control points on a `grid_points` x `grid_points` grid over the image (corners included) move by independent
    uniform displacements of at most `max_displacement` of the image side; the TPS through them is the warp.
    The warped view W of an image I is W(q) = I(f(q)), `grid_sample(I, grid, align_corners=True)`.

    Returns:
        grid [B, H, W, 2]: f(q) in normalised coordinates; flow [B, H, W, 2]: f(q) - q in pixels, from the warped
        view to the image (the flow `equivariance_loss` takes with the warped view as A); valid [B, H, W] bool:
        f(q) falls inside the image, so pixel q of the warped view shows a pixel of the image.
    """
    axis = torch.linspace(-1.0, 1.0, grid_points)
    cy, cx = torch.meshgrid(axis, axis, indexing="ij")
    control = torch.stack([cx, cy], dim=-1).reshape(-1, 2)  # (N, 2)
    shift = (torch.rand(batch, len(control), 2, generator=generator) * 2.0 - 1.0) * (2.0 * max_displacement)
    grid = tps_grid(control, control + shift, height, width)
    xs = (grid[..., 0] + 1.0) * (width - 1) / 2.0  # pixel position read in the image
    ys = (grid[..., 1] + 1.0) * (height - 1) / 2.0
    base_y, base_x = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    flow = torch.stack([xs - base_x, ys - base_y], dim=-1)
    valid = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    return grid, flow, valid


def synthetic_warp_loss(
    features_of: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    image: torch.Tensor,
    cse: torch.Tensor | None,
    features: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The equivariance loss on a random TPS warp of the batch itself (Slim DensePose's synthetic-warp variant).

    Args:
        features_of: (image [B, 3, H, W], cse [B, 4, H, W] or None) -> features [B, C, h, w], the network.
        image, cse: the batch's inputs (cse None for a model without CSE input). features: features_of(image, cse).
    Returns:
        scalar: `equivariance_loss` between the warped view's features and `features` moved along the exact flow,
        over the warped view's in-frame pixels.
    """
    b, _, h, w = image.shape
    grid, flow, valid = random_tps_warp(b, h, w, generator)
    grid = grid.to(image.device)
    warped = features_of(*(F.grid_sample(x, grid, align_corners=True) if x is not None else None for x in (image, cse)))
    return equivariance_loss(warped, features, flow.to(features.device), valid.to(features.device))
