"""Multi-level image encoders from timm by name (`pretrained=False`): a ViT through `forward_intermediates`, and CNN
pyramids through `features_only`. Each returns a list of NCHW feature maps, shallow to deep, and says its channels
and strides, so fusion and decoding never look at the encoder's name.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from bodymap.models.layers import ConvNormAct


class ViTEncoder(nn.Module):
    """A timm vision transformer returning the token maps of selected blocks (BodyMap Sec. 3.2).

    Blocks after the last selected one, the final norm and the classifier are pruned, so every parameter takes
    part in the forward pass (and gets a gradient). `dynamic_img_size` interpolates the position embedding, so a
    model trained at `img_size` also runs at other sizes (inference at 256 or 512 px).

    Args:
        name: timm ViT name (e.g. `vit_tiny_patch16_224`); its width and heads are kept.
        in_chans: 3 for RGB, 4 for the CSE estimate (colour code + foreground).
        img_size: size the position embedding is laid out for.
        patch_size: token stride in pixels (overrides the name's).
        depth: number of blocks (None keeps the name's).
        out_indices: blocks whose outputs are returned.
        drop_path_rate: stochastic depth.
    Forward:
        x: [B, in_chans, H, W] with H, W multiples of patch_size -> L tensors [B, D, H / p, W / p].
    """

    def __init__(
        self,
        *,
        name: str,
        in_chans: int,
        img_size: int,
        patch_size: int,
        depth: int | None,
        out_indices: Sequence[int],
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        kwargs = {"depth": depth} if depth is not None else {}
        self.vit = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            in_chans=in_chans,
            img_size=img_size,
            patch_size=patch_size,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            **kwargs,
        )
        n_blocks = len(self.vit.blocks)
        valid = all(0 <= i < n_blocks for i in out_indices) and list(out_indices) == sorted(set(out_indices))
        if not out_indices or not valid:
            raise ValueError(f"out_indices must be increasing block ids in [0, {n_blocks}), got {list(out_indices)}")
        self.out_indices = [int(i) for i in out_indices]
        self.vit.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self.channels = [int(self.vit.embed_dim)] * len(self.out_indices)
        self.strides = [int(patch_size)] * len(self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.vit.forward_intermediates(
            x, indices=self.out_indices, output_fmt="NCHW", intermediates_only=True
        )  # L x (B, D, H / p, W / p)


class CNNEncoder(nn.Module):
    """A timm CNN (`features_only=True`, e.g. resnet18, efficientnet_b0): a feature pyramid for the Table 5 ablation.

    Forward:
        x: [B, in_chans, H, W] -> L tensors [B, channels[l], H / strides[l], W / strides[l]].
    """

    def __init__(self, *, name: str, in_chans: int, out_indices: Sequence[int]) -> None:
        super().__init__()
        self.net = timm.create_model(
            name, pretrained=False, features_only=True, in_chans=in_chans, out_indices=tuple(out_indices)
        )
        self.channels = [int(c) for c in self.net.feature_info.channels()]
        self.strides = [int(r) for r in self.net.feature_info.reduction()]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))


class UNetEncoder(nn.Module):
    """The contracting path of a U-Net (Ronneberger et al. 2015): two 3x3 convs per level, 2x max-pool between.

    Forward:
        x: [B, in_chans, H, W] -> L tensors [B, widths[l], H / 2^l, W / 2^l].
    """

    def __init__(self, *, in_chans: int, widths: Sequence[int]) -> None:
        super().__init__()
        chans = [in_chans, *widths]
        self.levels = nn.ModuleList(
            nn.Sequential(ConvNormAct(cin, cout), ConvNormAct(cout, cout)) for cin, cout in itertools.pairwise(chans)
        )
        self.channels = [int(w) for w in widths]
        self.strides = [2**level for level in range(len(widths))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level, block in enumerate(self.levels):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            feats.append(x)
        return feats
