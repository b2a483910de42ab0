"""The BodyMap networks: two-stream ViT + DPT (the paper's model) and the CNN / U-Net backbones of Table 5.

All take the same inputs and give the same outputs (`BodyMapNet`); build them by name with
`bodymap.models.create_model`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bodymap.models.base import BodyMapNet, CorrespondenceHeads
from bodymap.models.dpt import DPTDecoder, LevelFusion
from bodymap.models.encoders import CNNEncoder, UNetEncoder, ViTEncoder
from bodymap.models.layers import ConvNormAct


def _dpt_strides(levels: int) -> list[int]:
    """DPT's output strides per level, shallow to deep: 4, 8, 16, 32 (Ranftl et al. 2021, Sec. 3)."""
    return [4 * 2**level for level in range(levels)]


class BodyMapViT(BodyMapNet):
    """BodyMap (Sec. 3.2): appearance and correspondence ViTs, per-level fusion, DPT decoder, colour + silhouette.

    Args:
        encoder: timm ViT name for both transformers (separate weights).
        img_size: input size the position embeddings are laid out for (other sizes work, interpolated).
        patch_size: token stride (the paper's 16: an 8 x 8 token grid at 128 px).
        depth: transformer blocks (None: the timm name's).
        out_indices: blocks read by the decoder, one DPT level each (shallow to deep).
        features: decoder width F; level l is fused to F * 2^l / 2 channels (widening with depth, as DPT's reassemble).
        use_correspondence: False gives the RGB-only variant (`bodymap_vit_rgb`, Table 1's "RGB only").
        drop_path_rate: stochastic depth in both transformers.
        stem: channels of each encoder's convolutional stem (`ViTEncoder`; empty: patchify).
        num_bins: values per colour channel (256).
        cse_prior: add the CSE estimate to the heads' logits (`CorrespondenceHeads`); "gated": scaled per pixel by a
            learned gate; False: encode it only.
    """

    def __init__(
        self,
        *,
        encoder: str,
        img_size: int,
        patch_size: int,
        depth: int | None,
        out_indices: Sequence[int],
        features: int,
        use_correspondence: bool = True,
        drop_path_rate: float = 0.0,
        stem: Sequence[int] = (),
        num_bins: int = 256,
        cse_prior: bool | str = True,
    ) -> None:
        strides = _dpt_strides(len(out_indices))
        super().__init__(size_divisor=max(patch_size, strides[-1]))
        vit = {
            "name": encoder,
            "img_size": img_size,
            "patch_size": patch_size,
            "depth": depth,
            "out_indices": out_indices,
            "drop_path_rate": drop_path_rate,
            "stem": tuple(stem),
        }
        self.appearance = ViTEncoder(in_chans=3, **vit)
        self.correspondence = ViTEncoder(in_chans=4, **vit) if use_correspondence else None
        fused = [max(1, features * 2**level // 2) for level in range(len(out_indices))]
        self.fusion = LevelFusion(
            self.appearance.channels, self.correspondence.channels if self.correspondence else None, fused
        )
        self.decoder = DPTDecoder(fused, [patch_size / s for s in strides], features)
        self.heads = CorrespondenceHeads(
            features, max(1, features // 2), num_bins, cse_prior=use_correspondence and cse_prior
        )


class BodyMapCNN(BodyMapNet):
    """Table 5 ablation: the ViTs swapped for timm CNN pyramids (`features_only`), same fusion, decoder and heads.

    Args:
        encoder: timm CNN name for both streams (e.g. resnet18, efficientnet_b0).
        out_indices: pyramid levels (timm feature indices; 1..4 = strides 4..32 for ResNets and EfficientNets).
        features: decoder width.
        use_correspondence: False drops the CSE stream.
        num_bins: values per colour channel (256).
        cse_prior: add the CSE estimate to the heads' logits (`CorrespondenceHeads`); "gated": scaled per pixel by a
            learned gate; False: encode it only.
    """

    def __init__(
        self,
        *,
        encoder: str,
        out_indices: Sequence[int],
        features: int,
        use_correspondence: bool = True,
        num_bins: int = 256,
        cse_prior: bool | str = True,
    ) -> None:
        appearance = CNNEncoder(name=encoder, in_chans=3, out_indices=out_indices)
        super().__init__(size_divisor=appearance.strides[-1])
        self.appearance = appearance
        self.correspondence = (
            CNNEncoder(name=encoder, in_chans=4, out_indices=out_indices) if use_correspondence else None
        )
        channels = self.appearance.channels
        self.fusion = LevelFusion(channels, self.correspondence.channels if self.correspondence else None, channels)
        # A CNN pyramid already sits at its strides, so reassembling is only the 3x3 projection.
        self.decoder = DPTDecoder(channels, [1.0] * len(channels), features)
        self.heads = CorrespondenceHeads(
            features, max(1, features // 2), num_bins, cse_prior=use_correspondence and cse_prior
        )


class UNetDecoder(nn.Module):
    """U-Net expanding path: upsample 2x, concatenate the skip, two 3x3 convs; from the deepest level up.

    Forward:
        feats: L tensors [B, widths[l], H / 2^l, W / 2^l] -> [B, widths[0], H, W].
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvNormAct(deep + shallow, shallow), ConvNormAct(shallow, shallow))
            for shallow, deep in itertools.pairwise(widths)
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for level in range(len(feats) - 2, -1, -1):
            skip = feats[level]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.blocks[level](torch.cat([x, skip], dim=1))  # (B, w_{l+1} + w_l, h_l, w_l) -> (B, w_l, ...)
        return x


class BodyMapUNet(BodyMapNet):
    """Table 5 ablation: a U-Net per stream (no pretrained-style backbone), fused per level, U-Net decoder.

    Args:
        widths: channels per level (level l at stride 2^l).
        use_correspondence: False drops the CSE stream.
        num_bins: values per colour channel (256).
        cse_prior: add the CSE estimate to the heads' logits (`CorrespondenceHeads`); "gated": scaled per pixel by a
            learned gate; False: encode it only.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int],
        use_correspondence: bool = True,
        num_bins: int = 256,
        cse_prior: bool | str = True,
    ) -> None:
        widths = [int(w) for w in widths]
        super().__init__(size_divisor=2 ** (len(widths) - 1))
        self.appearance = UNetEncoder(in_chans=3, widths=widths)
        self.correspondence = UNetEncoder(in_chans=4, widths=widths) if use_correspondence else None
        self.fusion = LevelFusion(widths, widths if use_correspondence else None, widths)
        self.decoder = UNetDecoder(widths)
        self.heads = CorrespondenceHeads(
            widths[0], max(32, widths[0]), num_bins, cse_prior=use_correspondence and cse_prior
        )
