"""CSE training losses (Neverova et al. 2020, Sec. 3.3): geodesic-aware soft embedding loss + foreground CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_embedding_loss(
    pixel_embedding: torch.Tensor,
    vertex_embedding: torch.Tensor,
    geodesic_rows: torch.Tensor,
    sigma_geodesic: float,
    sigma_embedding: float,
) -> torch.Tensor:
    """Cross-entropy between the geodesic target and the embedding-distance distribution over all vertices.

    target_v = softmax(-d(v_gt, v) / sigma_g),  log q_v = log_softmax(-||e_p - E_v||^2 / sigma_e).

    Runs in float32 whatever the autocast state: squared distances in [0, 4] divided by sigma_embedding lose the
    precision the softmax over V vertices needs in half precision.

    Args:
        pixel_embedding: [N, D]; vertex_embedding: [V, D]; geodesic_rows: [N, V] metres, d(v_gt(p), .).
    Returns:
        scalar float32 mean over the N pixels.
    """
    with torch.autocast(device_type=pixel_embedding.device.type, enabled=False):
        pixel_embedding, vertex_embedding = pixel_embedding.float(), vertex_embedding.float()
        target = torch.softmax(-geodesic_rows.float() / sigma_geodesic, dim=1)  # (N, V)
        sq = (
            pixel_embedding.pow(2).sum(1, keepdim=True)
            - 2.0 * pixel_embedding @ vertex_embedding.T
            + vertex_embedding.pow(2).sum(1)[None]
        )  # (N, V) squared distances
        log_q = torch.log_softmax(-sq / sigma_embedding, dim=1)
        return -(target * log_q).sum(1).mean()


def foreground_loss(fg_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """2-class cross-entropy in float32. fg_logits: [B, 2, H, W]; mask: [B, H, W] in {0, 1}."""
    return F.cross_entropy(fg_logits.float(), mask.long())
