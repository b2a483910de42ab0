"""Per-level fusion of the two encoders and the DPT reassemble + fusion decoder (BodyMap Sec. 3.2).

BodyMap fuses the appearance transformer's features (RGB) with the correspondence transformer's features (the CSE
estimate) level by level and decodes them with a DPT-style decoder to a full-resolution map. Everything here is a
looped `nn.ModuleList` over explicit per-level features, as in dinov2's `decode_heads.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bodymap.models.layers import FeatureFusionBlock, Resample


class LevelFusion(nn.Module):
    """Fuse appearance and correspondence features per level: concat along channels -> 1x1 conv.

    With `correspondence_channels=None` (the RGB-only variant) each level is only projected, so every variant
    shares the decoder code.

    Args (forward):
        appearance: L tensors [B, Ca_l, h_l, w_l].
        correspondence: L tensors [B, Cc_l, h_l, w_l] (same spatial sizes), or None.
    Returns:
        L tensors [B, out_channels[l], h_l, w_l].
    """

    def __init__(
        self,
        appearance_channels: Sequence[int],
        correspondence_channels: Sequence[int] | None,
        out_channels: Sequence[int],
    ) -> None:
        super().__init__()
        if len(appearance_channels) != len(out_channels):
            raise ValueError(f"{len(appearance_channels)} appearance levels but {len(out_channels)} output levels")
        other = list(correspondence_channels) if correspondence_channels is not None else [0] * len(out_channels)
        self.fuse = nn.ModuleList(
            nn.Conv2d(ca + cc, co, 1) for ca, cc, co in zip(appearance_channels, other, out_channels, strict=True)
        )

    def forward(
        self, appearance: Sequence[torch.Tensor], correspondence: Sequence[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        out = []
        for level, conv in enumerate(self.fuse):
            x = appearance[level]
            if correspondence is not None:
                x = torch.cat([x, correspondence[level]], dim=1)  # (B, Ca + Cc, h, w)
            out.append(conv(x))
        return out


class DPTDecoder(nn.Module):
    """DPT reassemble (resample each level to its stride, 3x3 conv to `features`) + fusion from deep to shallow.

    Args:
        in_channels: channels of each fused level, shallow to deep.
        scales: per level, the factor that brings it to its DPT stride (ViT with patch 16: 4, 2, 1, 0.5 for
            strides 4, 8, 16, 32; CNN pyramids are already there: all 1).
        features: decoder width F.
    Forward:
        feats: L tensors [B, in_channels[l], h_l, w_l] -> [B, F, 2 h_0 s_0, 2 w_0 s_0] (stride 2 for DPT strides).
    """

    def __init__(self, in_channels: Sequence[int], scales: Sequence[float], features: int) -> None:
        super().__init__()
        if len(in_channels) != len(scales):
            raise ValueError(f"{len(in_channels)} levels but {len(scales)} scales")
        self.resample = nn.ModuleList(Resample(c, s) for c, s in zip(in_channels, scales, strict=True))
        self.project = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in in_channels)
        # Block l fuses level l into the path coming from level l + 1; the deepest block has no skip.
        n = len(in_channels)
        self.fusion = nn.ModuleList(FeatureFusionBlock(features, has_skip=level < n - 1) for level in range(n))
        self.out_channels = features

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        levels = [proj(res(f)) for f, res, proj in zip(feats, self.resample, self.project, strict=True)]
        n = len(levels)
        x = self.fusion[n - 1](levels[n - 1], size=levels[n - 2].shape[-2:] if n > 1 else None)
        for level in range(n - 2, -1, -1):
            size = levels[level - 1].shape[-2:] if level > 0 else None  # the shallowest block doubles
            x = self.fusion[level](x, levels[level], size=size)
        return x
