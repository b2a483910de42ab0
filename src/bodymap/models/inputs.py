"""The correspondence transformer's input: a CSE estimate rendered in the template colour code (BodyMap Sec. 3.2)."""

from __future__ import annotations

import torch

# A withheld estimate (`augment.cse_dropout`): every channel 0.5, which the network centres to 0 and which leaves the
# heads' CSE prior neutral (no colour bonus at probability 0.5, no silhouette push), so the sample is learnt from RGB.
WITHHELD_CSE = 0.5


def cse_input(vertex: torch.Tensor, score: torch.Tensor | None, colors: torch.Tensor) -> torch.Tensor:
    """Encode a CSE vertex map as the 4-channel network input.

    Args:
        vertex: [..., H, W] int template vertex ids from CSE, -1 on background.
        score: [..., H, W] float CSE foreground probability in [0, 1], or None to use `vertex >= 0`.
        colors: [V, 3] uint8 (or int) template colour code (`BodyTemplate.colors`), on vertex's device.
    Returns:
        [..., 4, H, W] float32: R, G, B of each pixel's vertex colour / 255 (0 on background), then the probability.
    """
    foreground = vertex >= 0
    rgb = colors[vertex.clamp_min(0).long()].float() / 255.0  # (..., H, W, 3)
    rgb = rgb * foreground.unsqueeze(-1)
    prob = score.float() if score is not None else foreground.float()
    return torch.cat([rgb.movedim(-1, -3), prob.unsqueeze(-3)], dim=-3)  # (..., 4, H, W)
