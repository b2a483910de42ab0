"""Small single-purpose layers shared by every BodyMap network: convolutions, resampling, DPT blocks, heads.

DPT (Ranftl et al. 2021) blocks follow dinov2's `decode_heads.py`: residual conv units without normalisation and a
feature-fusion block that adds a refined skip to the upsampled coarser path, resizing the skip when shapes differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom/right of x [B, C, H, W] so H and W are multiples of `multiple` (crop outputs back)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


class ConvNormAct(nn.Module):
    """3x3 conv -> GroupNorm -> ReLU. GroupNorm rather than BatchNorm: CPU batches are a handful of images."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(math.gcd(groups, out_channels), out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Resample(nn.Module):
    """Change the stride of a feature map by a power-of-two `scale` (DPT reassemble's resize step).

    scale > 1: transposed conv (k = s = scale), as DPT's 4x / 2x token upsampling; scale == 1: identity;
    scale < 1: strided conv (k = s = 1 / scale).
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if scale <= 0 or not math.log2(scale).is_integer():
            raise ValueError(f"resample scale must be a power of two, got {scale}")
        self.scale = scale
        if scale > 1:
            self.op: nn.Module = nn.ConvTranspose2d(channels, channels, int(scale), stride=int(scale))
        elif scale < 1:
            self.op = nn.Conv2d(channels, channels, int(1 / scale), stride=int(1 / scale))
        else:
            self.op = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), DPT's refinement unit."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return x + out


class FeatureFusionBlock(nn.Module):
    """DPT fusion: path (+ refined skip) -> refine -> resize to the next level's size (or 2x) -> 1x1 conv.

    Args (forward):
        x: [B, F, h, w] the coarser path (or the deepest reassembled level).
        skip: [B, F, h', w'] this level's reassembled features, or None at the deepest level.
        size: output (H, W); None doubles the resolution (the last block, towards stride 2).
    Returns:
        [B, F, H, W].
    """

    def __init__(self, channels: int, has_skip: bool) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels) if has_skip else None
        self.unit = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if self.skip_unit is not None and skip is not None:
            res = self.skip_unit(skip)
            if res.shape[-2:] != x.shape[-2:]:
                # Odd sizes round differently per level; align the skip to the path rather than fail.
                res = F.interpolate(res, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + res
        x = self.unit(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DenseHead(nn.Module):
    """Per-pixel prediction at full resolution: 3x3 conv -> upsample to `size` -> 3x3 conv -> ReLU -> 1x1 conv.

    The dinov2 DPT head's layout: the expensive wide output conv runs once, after upsampling, at 1x1.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv_mid = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv_out = nn.Conv2d(hidden, out_channels, 1)

    def features(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The hidden features the 1x1 output conv reads: [B, C, h, w] -> [B, hidden, *size]."""
        x = self.conv_in(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.relu(self.conv_mid(x))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x: [B, C, h, w] -> [B, out_channels, *size]."""
        return self.conv_out(self.features(x, size))
