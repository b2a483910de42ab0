"""What every BodyMap network shares: the output container, the two heads and the forward pass.

A network is two encoders (appearance on RGB, correspondence on the CSE estimate; the RGB-only variant has no
second one), a per-level fusion, a decoder and the heads (BodyMap Sec. 3.2). Subclasses only build those parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bodymap.models.layers import DenseHead, pad_to_multiple

# timm's ImageNet statistics: the ViT/CNN encoders are the usual ones, so they get the usual input range.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class BodyMapOutput:
    """Network outputs at input resolution.

    color_logits: [B, 3, num_bins, H, W] float, per channel (R, G, B of the template colour code) logits over the
        256 colour values (BodyMap Sec. 3.3: correspondence as 3 x 256-way classification).
    silhouette: [B, 1, H, W] float foreground logit (sigmoid > 0.5 is foreground).
    """

    color_logits: torch.Tensor
    silhouette: torch.Tensor


class CorrespondenceHeads(nn.Module):
    """Colour-code classification head (3 x num_bins logits per pixel) and silhouette head.

    Forward:
        x: [B, C, h, w] decoder output; size: the padded input size; crop: the true input size (H, W).
    Returns:
        `BodyMapOutput` with color_logits [B, 3, num_bins, H, W] and silhouette [B, 1, H, W].
    """

    def __init__(self, in_channels: int, hidden: int, num_bins: int = 256) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.color = DenseHead(in_channels, hidden, 3 * num_bins)
        self.silhouette = DenseHead(in_channels, hidden, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int], crop: tuple[int, int]) -> BodyMapOutput:
        h, w = crop
        logits = self.color(x, size)  # (B, 3 K, Hp, Wp)
        b, _, hp, wp = logits.shape
        logits = logits.view(b, 3, self.num_bins, hp, wp)  # (B, 3, K, Hp, Wp)
        return BodyMapOutput(color_logits=logits[..., :h, :w], silhouette=self.silhouette(x, size)[..., :h, :w])


class BodyMapNet(nn.Module):
    """Base of every registered network: normalise, pad, encode, fuse, decode, predict, crop.

    Subclasses set `appearance`, `correspondence` (or None), `fusion`, `decoder` and `heads`, and pass
    `size_divisor` (inputs are zero-padded to a multiple of it, outputs cropped back, so any H, W works).

    Forward:
        image: [B, 3, H, W] float32 RGB in [0, 1].
        cse: [B, 4, H, W] float32 in [0, 1]: the CSE vertex map in the template colour code / 255 (0 on background)
            and the CSE foreground probability (`bodymap.models.cse_input`). Ignored (may be None) by RGB-only models.
    Returns:
        `BodyMapOutput` at H x W.
    """

    appearance: nn.Module
    correspondence: nn.Module | None
    fusion: nn.Module
    decoder: nn.Module
    heads: CorrespondenceHeads

    def __init__(self, size_divisor: int) -> None:
        super().__init__()
        self.size_divisor = int(size_divisor)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def uses_cse(self) -> bool:
        return self.correspondence is not None

    def forward(self, image: torch.Tensor, cse: torch.Tensor | None = None) -> BodyMapOutput:
        h, w = image.shape[-2:]
        x = pad_to_multiple((image - self.image_mean) / self.image_std, self.size_divisor)
        appearance = self.appearance(x)
        correspondence = None
        if self.correspondence is not None:
            if cse is None:
                raise ValueError("this model takes the CSE estimate as its second input; got cse=None")
            if cse.shape[-2:] != image.shape[-2:] or cse.shape[1] != 4:
                raise ValueError(f"cse must be [B, 4, {h}, {w}] like the image, got {list(cse.shape)}")
            # Pad first (padding reads as background: colour 0, probability 0), then centre [0, 1] to [-1, 1].
            correspondence = self.correspondence(pad_to_multiple(cse, self.size_divisor) * 2.0 - 1.0)
        fused = self.fusion(appearance, correspondence)
        return self.heads(self.decoder(fused), size=x.shape[-2:], crop=(h, w))
