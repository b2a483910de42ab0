"""Colour-code classification loss with chart-based pixel weights (BodyMap Sec. 3.3).

BodyMap predicts each pixel's template colour as three 256-way classifications (R, G, B). Hands and head cover few
pixels but carry much of what people look at, so their pixels weigh more (`hand_weight`, `head_weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HAND_CHARTS = (3, 4)  # DensePose I: right hand, left hand
HEAD_CHARTS = (23, 24)  # DensePose I: head right, head left
NUM_CHARTS = 25  # 0 background + 24 charts


def chart_weight_table(
    hand_weight: float, head_weight: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Per-chart pixel weight: [25] float32, 1 everywhere except the hand and head charts."""
    table = torch.ones(NUM_CHARTS, dtype=torch.float32, device=device)
    table[list(HAND_CHARTS)] = hand_weight
    table[list(HEAD_CHARTS)] = head_weight
    return table


def pixel_weights(
    vertex: torch.Tensor,
    chart: torch.Tensor | None = None,
    chart_table: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weight of each pixel in the classification loss; 0 where there is no GT vertex.

    Args:
        vertex: [B, H, W] int GT vertex ids, -1 where unlabelled (background, or unknown in pseudo-GT).
        chart: [B, H, W] uint8/int DensePose chart 0..24, or None (no chart weighting).
        chart_table: [25] float from `chart_weight_table` (needed with `chart`).
        confidence: [B, H, W] float per-pixel confidence of pseudo-GT, or None.
    Returns:
        [B, H, W] float32.
    """
    weight = (vertex >= 0).float()
    if chart is not None:
        if chart_table is None:
            raise ValueError("pixel_weights: a chart map needs its chart_table (chart_weight_table)")
        weight = weight * chart_table[chart.long().clamp(0, NUM_CHARTS - 1)]
    if confidence is not None:
        weight = weight * confidence.float()
    return weight


def soft_targets(target: torch.Tensor, sigma_bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Gaussian target distributions over the colour values, centred on the GT value of each channel.

    Args:
        target: [N, 3] int64 GT colour values; sigma_bins: [3] float, the Gaussian's width per channel in values.
    Returns:
        [N, 3, K] float32, each [i, c, :] summing to 1 (a point mass where sigma is 0).
    """
    values = torch.arange(num_bins, device=target.device, dtype=torch.float32)  # (K,)
    offset = values - target.float().unsqueeze(-1)  # (N, 3, K)
    sigma = sigma_bins.to(target.device, torch.float32).view(1, 3, 1)
    logit = -0.5 * (offset / sigma.clamp_min(1e-6)) ** 2
    logit = torch.where(sigma > 0, logit, torch.where(offset == 0, 0.0, -torch.inf))
    return torch.softmax(logit, dim=-1)


def pixel_classification_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, sigma_bins: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean over N pixels of the cross-entropy averaged over R, G, B.

    With `sigma_bins` the targets are Gaussians over the colour values (`soft_targets`) and the loss is the
    KL divergence to them (the cross-entropy minus the targets' entropy, so it is 0 when the prediction equals the
    target). The colour code is a scaled rest-pose coordinate, so neighbouring values are neighbouring surface
    points, and a one-hot target calls a prediction one value off as wrong as one across the body; Gaussian targets
    say otherwise. Argmax decoding is unchanged (the targets peak at the GT value). The paper uses one-hot targets,
    the default; on the default CPU run Gaussian ones (3 cm) did not do better (README, "Where it stands").

    Args:
        logits: [N, 3, K] float colour logits at N pixels; target: [N, 3] int64 GT colour values; weight: [N] float;
        sigma_bins: [3] float per-channel Gaussian width in colour values, or None for one-hot targets.
    Returns:
        scalar float32 (0, with a graph, when N = 0).
    """
    if sigma_bins is None or not bool((sigma_bins > 0).any()):
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        ce = ce.view(-1, 3).mean(dim=1)  # (N * 3,) -> (N,)
    else:
        soft = soft_targets(target, sigma_bins, logits.shape[-1])  # (N, 3, K)
        log_p = torch.log_softmax(logits.float(), dim=-1)
        ce = F.kl_div(log_p, soft, reduction="none").sum(dim=-1).mean(dim=1)  # (N, 3, K) -> (N,)
    return (weight * ce).sum() / weight.sum().clamp_min(1e-6)
