"""Silhouette loss: soft IoU between the predicted foreground probability and the GT mask (BodyMap Sec. 3.3)."""

from __future__ import annotations

import torch


def soft_iou_loss(
    silhouette: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None, smooth: float = 1.0
) -> torch.Tensor:
    """1 - mean over images of the soft IoU: sum(p m) / sum(p + m - p m), p = sigmoid(logit).

    IoU rather than per-pixel BCE keeps thin structures (fingers, hair strands) from being swamped by the large
    background. `smooth` (in pixels) makes an empty mask with an empty prediction count as IoU 1 and keeps the
    gradient finite. Exactly 0 when p equals a binary mask.

    Args:
        silhouette: [B, 1, H, W] float logits.
        mask: [B, H, W] float GT foreground in [0, 1].
        weight: [B, H, W] float per-pixel confidence (0 excludes a pixel), or None.
    Returns:
        scalar float32.
    """
    p = torch.sigmoid(silhouette[:, 0].float())  # (B, H, W)
    m = mask.float()
    w = weight.float() if weight is not None else torch.ones_like(m)
    inter = (w * p * m).sum(dim=(1, 2))
    union = (w * (p + m - p * m)).sum(dim=(1, 2))
    return 1.0 - ((inter + smooth) / (union + smooth)).mean()
