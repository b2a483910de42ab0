"""What every BodyMap network shares: the output container, the two heads and the forward pass.

A network is two encoders (appearance on RGB, correspondence on the CSE estimate; the RGB-only variant has no
second one), a per-level fusion, a decoder and the heads (BodyMap Sec. 3.2). Subclasses only build those parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bodymap.models.layers import DenseHead, pad_to_multiple

# timm's ImageNet statistics: the ViT/CNN encoders are the usual ones, so they get the usual input range.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def colour_bins(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Colour-code values 0..255 (int) -> the class of each among `num_bins` equal bins (the identity at 256)."""
    return torch.div(values.long() * num_bins, 256, rounding_mode="floor")


def bin_values(bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Classes 0..num_bins-1 -> the colour value at each bin's centre (the identity at 256), int64."""
    return torch.div((2 * bins.long() + 1) * 256, 2 * num_bins, rounding_mode="floor")


class BodyMapOutput:
    """Network outputs at input resolution.

    The colour head's last layer is a per-pixel linear map (a 1 x 1 convolution) from `color_features` to
    3 x num_bins logits. Training only needs logits at labelled pixels and inference only at foreground pixels, so
    they are computed where asked (`logits_at`) instead of as a [B, 3, K, H, W] tensor: at 128 px the full tensor
    and its gradient were most of a training step. `color_logits` still gives the full tensor when wanted.

    Attributes:
        silhouette: [B, 1, H, W] float foreground logit (sigmoid > 0.5 is foreground).
        color_features: [B, C, H, W] float, the colour head's last hidden features (also the features the
            equivariance loss compares).
        num_bins: K classes per colour channel (256: BodyMap Sec. 3.3's 3 x 256-way classification, one per colour
            value; fewer bins classify coarser, `colour_bins` / `bin_values` map between values and classes).
    """

    def __init__(
        self,
        silhouette: torch.Tensor,
        color_logits: torch.Tensor | None = None,
        color_features: torch.Tensor | None = None,
        color_weight: torch.Tensor | None = None,
        color_bias: torch.Tensor | None = None,
        prior_bins: torch.Tensor | None = None,
        prior_weight: torch.Tensor | None = None,
    ) -> None:
        """Either `color_logits` [B, 3, K, H, W], or `color_features` with the projection `color_weight` [3K, C]
        and `color_bias` [3K]. Optionally the CSE prior: `prior_bins` [B, 3, H, W] int64 (the CSE colour per
        channel) and `prior_weight` [B, 3, H, W] float (the logit added at that bin; 0 where CSE sees background)."""
        if color_logits is None and (color_features is None or color_weight is None):
            raise ValueError("BodyMapOutput needs color_logits, or color_features with color_weight")
        self.silhouette = silhouette
        self._logits = color_logits
        self.color_features = color_features
        self._weight = color_weight
        self._bias = color_bias
        self._prior_bins = prior_bins
        self._prior_weight = prior_weight
        self.num_bins = int(color_logits.shape[2]) if color_logits is not None else int(color_weight.shape[0]) // 3

    def logits_at(self, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Colour logits at N pixels (image b, row y, column x: [N] int64 each) → [N, 3, K].

        Mixed precision: under autocast the features come out in float16 / bfloat16 while the projection's weight
        stays float32. The features are brought to the weight's dtype, so outside autocast (where the losses run,
        `bodymap.losses.total_loss`) the logits are float32, and inside it F.linear runs in autocast's dtype as
        usual; the CSE prior is added in the logits' dtype.
        """
        if self._logits is not None:
            return self._logits[b, :, :, y, x]
        features = self.color_features[b, :, y, x].to(self._weight.dtype)  # (N, C)
        logits = F.linear(features, self._weight, self._bias).view(-1, 3, self.num_bins)  # (N, 3, K)
        if self._prior_bins is not None:
            bins = self._prior_bins[b, :, y, x].unsqueeze(-1)  # (N, 3, 1)
            logits = logits.scatter_add(2, bins, self._prior_weight[b, :, y, x].unsqueeze(-1).to(logits.dtype))
        return logits

    def colours_at(self, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The decoded colour (most likely class per channel, as a colour value) at N pixels → [N, 3] int64."""
        return bin_values(self.logits_at(b, y, x).argmax(dim=2), self.num_bins)

    @property
    def color_logits(self) -> torch.Tensor:
        """[B, 3, K, H, W] logits at every pixel (computed on demand; prefer `logits_at`)."""
        if self._logits is None:
            b, _, h, w = self.color_features.shape
            features = self.color_features.to(self._weight.dtype)  # as in `logits_at`
            flat = F.conv2d(features, self._weight[:, :, None, None], self._bias)  # (B, 3 K, H, W)
            logits = flat.view(b, 3, self.num_bins, h, w)
            if self._prior_bins is not None:
                prior = self._prior_weight.unsqueeze(2).to(logits.dtype)
                logits = logits.scatter_add(2, self._prior_bins.unsqueeze(2), prior)
            self._logits = logits
        return self._logits


class CorrespondenceHeads(nn.Module):
    """Colour-code classification head (3 x num_bins logits per pixel) and silhouette head.

    With `cse_prior` the heads refine the CSE estimate residually: each channel's logit at the CSE colour gets
    `prior_scale` added and the silhouette logit gets `silhouette_prior * (p_cse - 0.5)`, both learned. At
    initialisation the network therefore reproduces its CSE input, and training learns the corrections — on a
    small budget the networks learn these much faster than to rebuild the estimate from the tokens. With
    `cse_prior="gated"` the colour bonus is also scaled per pixel by a gate read from the colour features (sigmoid of a
    1x1 conv, starting at 0.98 everywhere), so the network can turn the estimate down where it learns that CSE
    errs instead of only by one scalar for the whole image.

    Forward:
        x: [B, C, h, w] decoder output; size: the padded input size; crop: the true input size (H, W);
        prior: [B, 4, H, W] the CSE input (colour code / 255 and foreground probability), or None.
    Returns:
        `BodyMapOutput` at the crop size (colour logits on demand, see `BodyMapOutput`).
    """

    def __init__(self, in_channels: int, hidden: int, num_bins: int = 256, cse_prior: bool | str = False) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.color = DenseHead(in_channels, hidden, 3 * num_bins)
        self.silhouette = DenseHead(in_channels, hidden, 1)
        self.use_prior = bool(cse_prior)
        if self.use_prior:
            self.prior_scale = nn.Parameter(torch.full((3,), 4.0))
            self.silhouette_prior = nn.Parameter(torch.tensor(8.0))
        self.prior_gate = None
        if cse_prior == "gated":
            self.prior_gate = nn.Conv2d(hidden, 1, 1)
            nn.init.zeros_(self.prior_gate.weight)
            nn.init.constant_(self.prior_gate.bias, 4.0)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], crop: tuple[int, int], prior: torch.Tensor | None = None
    ) -> BodyMapOutput:
        h, w = crop
        features = self.color.features(x, size)[..., :h, :w]  # (B, hidden, H, W)
        silhouette = self.silhouette(x, size)[..., :h, :w]  # (B, 1, H, W)
        projection = self.color.conv_out
        bins = weight = None
        if self.use_prior and prior is not None:
            fg = prior[:, 3:4]  # (B, 1, H, W) CSE foreground probability
            silhouette = silhouette + self.silhouette_prior * (fg - 0.5)
            bins = colour_bins((prior[:, :3] * 255.0).round().clamp(0, 255), self.num_bins)  # (B, 3, H, W)
            weight = self.prior_scale.view(1, 3, 1, 1) * (fg > 0.5).to(features.dtype)  # (B, 3, H, W)
            if self.prior_gate is not None:
                weight = weight * torch.sigmoid(self.prior_gate(features))
        return BodyMapOutput(
            silhouette=silhouette,
            color_features=features,
            color_weight=projection.weight[:, :, 0, 0],
            color_bias=projection.bias,
            prior_bins=bins,
            prior_weight=weight,
        )


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
        return self.heads(self.decoder(fused), size=x.shape[-2:], crop=(h, w), prior=cse if self.uses_cse else None)
