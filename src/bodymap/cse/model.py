"""Continuous Surface Embeddings (Neverova et al., NeurIPS 2020): the initialisation BodyMap refines.

A timm backbone (by name, `pretrained=False`) with a light FPN decoder predicts, per pixel, a D-dimensional
embedding and a 2-class foreground logit. Both are predicted at stride 4 and bilinearly upsampled to the input
resolution. Template vertices get embeddings `E = normalize(Phi W)`, Phi the fixed Laplace-Beltrami basis of the
template and W trainable, so the embedding is smooth over the surface by construction (CSE Sec. 3.2).
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from bodymap.models.base import IMAGENET_MEAN, IMAGENET_STD


class VertexEmbedding(nn.Module):
    """E = normalize(Phi W): [V, D] unit-norm vertex embeddings from a fixed basis Phi [V, k]."""

    def __init__(self, basis: torch.Tensor, embed_dim: int) -> None:
        super().__init__()
        self.register_buffer("basis", basis.float(), persistent=True)
        # Start from the D smoothest basis functions (plus a little noise), a smooth, injective-ish embedding.
        weight = torch.eye(basis.shape[1], embed_dim) + 0.01 * torch.randn(basis.shape[1], embed_dim)
        self.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        return F.normalize(self.basis @ self.weight, dim=1)  # (V, D)


class CseNet(nn.Module):
    """Pixel embeddings and foreground logits from RGB.

    Args:
        backbone: timm model name supporting `features_only` (e.g. 'resnet18').
        embed_dim: D.
        basis: [V, k] float32 template LBO basis (Phi).
        decoder_channels: width of the FPN decoder.
        input_scale: the encoder runs on the image resized by this factor (outputs are at input size).
    """

    def __init__(
        self, backbone: str, embed_dim: int, basis: torch.Tensor, decoder_channels: int = 64, input_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.input_scale = float(input_scale)
        self.encoder = timm.create_model(backbone, pretrained=False, features_only=True)
        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        # Use the levels at stride >= 4: the stride-2 stem features are costly and add little.
        self.levels = [i for i, r in enumerate(reductions) if r >= 4]
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], decoder_channels, 1) for i in self.levels)
        self.smooth = nn.Sequential(
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
        )
        self.embed_head = nn.Conv2d(decoder_channels, embed_dim, 1)
        self.fg_head = nn.Conv2d(decoder_channels, 2, 1)
        self.vertex_embedding = VertexEmbedding(basis, embed_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.embed_dim = embed_dim

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image: [B, 3, H, W] float in [0, 1] → embedding [B, D, H, W], fg_logits [B, 2, H, W]."""
        h, w = image.shape[-2:]
        x = (image - self.mean) / self.std
        if self.input_scale != 1.0:
            # A coarse initialisation needs no full resolution: the encoder sees a downscaled image (4x cheaper at
            # 0.5) and the outputs are upsampled back to the input size below.
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False, antialias=True)
        feats = self.encoder(x)
        feats = [feats[i] for i in self.levels]
        # Top-down FPN: start at the coarsest level, upsample and add each finer lateral.
        x = self.lateral[-1](feats[-1])
        for lateral, feat in zip(reversed(self.lateral[:-1]), reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=feat.shape[-2:], mode="bilinear", align_corners=False) + lateral(feat)
        x = self.smooth(x)  # (B, C, H/4, W/4)
        embedding = F.interpolate(self.embed_head(x), size=(h, w), mode="bilinear", align_corners=False)
        fg_logits = F.interpolate(self.fg_head(x), size=(h, w), mode="bilinear", align_corners=False)
        return {"embedding": embedding, "fg_logits": fg_logits}
