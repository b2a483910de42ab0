"""Multi-level image encoders from timm by name: a ViT through `forward_intermediates`, and CNN pyramids through
`features_only`. Each returns a list of NCHW feature maps, shallow to deep, and says its channels and strides, so
fusion and decoding never look at the encoder's name.

Encoders are built with random weights; `load_pretrained_encoders` then starts them from pretrained ones (timm's
hub, ImageNet for the usual names, or a local weights file), adapted to the encoder as built: the position
embedding and patch kernel resampled to its grid and patch size (timm's ViT rules), the 3-channel stem adapted to
the CSE stream's 4 channels, the blocks and heads it does not keep dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from bodymap.errors import BodymapError
from bodymap.models.layers import ConvNormAct

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


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
        stem: channels of a convolutional stem (3x3 stride-2 conv, norm, ReLU per entry) in front of the patch
            embedding, which then patchifies the stem's output (patch_size / 2^len(stem)), so the token stride
            stays patch_size ("early convolutions", Xiao et al. 2021: ViTs optimise faster and need less data
            with them). Empty: the plain patchify stem.
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
        stem: Sequence[int] = (),
    ) -> None:
        super().__init__()
        kwargs = {"depth": depth} if depth is not None else {}
        reduction = 2 ** len(stem)
        if patch_size % reduction or img_size % reduction:
            raise ValueError(f"a {len(stem)}-conv stem needs patch_size and img_size divisible by {reduction}")
        layers: list[nn.Module] = []
        channels = in_chans
        for width in stem:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.GroupNorm(1, width)]
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.stem = nn.Sequential(*layers)  # (B, in_chans, H, W) -> (B, stem[-1], H / 2^s, W / 2^s)
        self.vit = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            in_chans=channels,
            img_size=img_size // reduction,
            patch_size=patch_size // reduction,
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
        self.timm_name = name
        self.channels = [int(self.vit.embed_dim)] * len(self.out_indices)
        self.strides = [int(patch_size)] * len(self.out_indices)

    def load_weights(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Load a timm ViT state dict (see `load_pretrained_encoders`), resampled to this encoder's grid."""
        if len(self.stem):
            raise BodymapError(
                f"{origin}: pretrained ViT weights patchify RGB pixels; this encoder has a convolutional stem "
                "(model params: stem): use stem [] with pretrained weights"
            )
        from timm.models.vision_transformer import checkpoint_filter_fn

        _load_adapted(self.vit, state, origin, self.timm_name, lambda sd: checkpoint_filter_fn(sd, self.vit))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.vit.forward_intermediates(
            self.stem(x), indices=self.out_indices, output_fmt="NCHW", intermediates_only=True
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
        self.timm_name = name
        self.channels = [int(c) for c in self.net.feature_info.channels()]
        self.strides = [int(r) for r in self.net.feature_info.reduction()]

    def load_weights(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Load a timm CNN state dict (see `load_pretrained_encoders`); the classifier is not kept."""
        _load_adapted(self.net, state, origin, self.timm_name)

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


def pretrained_weights(name: str, source: bool | str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict `source` names for the timm encoder `name`, and where it came from (for messages).

    Args:
        name: the encoder's timm name, e.g. `vit_large_patch16_224`.
        source: True for timm's default pretrained weights of `name` (ImageNet; fetched from the Hugging Face hub
            and cached there), a timm hub name (`vit_large_patch16_224.augreg_in21k`, `hf-hub:timm/...`), or a
            path to a local weights file (.pth, .pt, .bin or .safetensors; a state dict of such a network).
    """
    if isinstance(source, str) and _is_path(source):
        path = Path(source)
        if not path.is_file():
            raise BodymapError(f"{path}: pretrained weights file not found (model params: pretrained)")
        try:
            return timm.models.load_state_dict(str(path)), str(path)
        except Exception as exc:
            raise BodymapError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    hub = name if source is True else str(source)
    try:
        return timm.create_model(hub, pretrained=True, num_classes=0).state_dict(), f"timm weights {hub!r}"
    except Exception as exc:
        raise BodymapError(
            f"pretrained weights {hub!r}: timm could not load them ({type(exc).__name__}: {exc}); without access to "
            "the Hugging Face hub, give a local weights file (model params: pretrained: /path/to/weights.pth)"
        ) from None


def load_pretrained_encoders(model: nn.Module, source: bool | str) -> None:
    """Start the encoders of a BodyMap network (`appearance`, and `correspondence` when it has one) from pretrained
    weights (`pretrained_weights`), fetched once for both.

    Raises:
        BodymapError: naming the weights and the encoder, when the weights cannot be had, do not fit the encoder, or
            the network's encoders take none (the U-Net).
    """
    encoders = [e for e in (model.appearance, getattr(model, "correspondence", None)) if e is not None]
    if not all(hasattr(e, "load_weights") for e in encoders):
        kinds = sorted({type(e).__name__ for e in encoders})
        raise BodymapError(f"{type(model).__name__}: its {', '.join(kinds)} encoders take no pretrained weights")
    state, origin = pretrained_weights(encoders[0].timm_name, source)
    for encoder in encoders:
        encoder.load_weights(state, origin)


def _is_path(source: str) -> bool:
    """A weights file rather than a hub name: a path that exists, has a weights suffix or a directory part."""
    if source.startswith("hf-hub:"):
        return False
    return "/" in source or source.endswith(WEIGHT_SUFFIXES) or Path(source).exists()


def _load_adapted(
    net: nn.Module,
    state: dict[str, torch.Tensor],
    origin: str,
    name: str,
    resample: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Load `state` into the timm network `net` (built as `name`): 3-channel stems adapted to `net`'s input
    channels (timm's `adapt_input_conv`), then `resample`; keys `net` does not have are left out, every tensor it
    has must be there."""
    own = net.state_dict()
    adapted = {}
    for key, value in state.items():
        target = own.get(key)
        if target is not None and value.ndim == 4 == target.ndim and value.shape[1] == 3 != target.shape[1]:
            value = timm.models.adapt_input_conv(int(target.shape[1]), value)  # the CSE stream's 4 channels
        adapted[key] = value
    if resample is not None:
        adapted = resample(adapted)
    adapted = {k: v for k, v in adapted.items() if k in own}
    missing = sorted(set(own) - set(adapted))
    if missing:
        raise BodymapError(
            f"{origin}: no weights for {len(missing)} of the {len(own)} tensors of encoder {name} (e.g. "
            f"{', '.join(missing[:3])}): are they weights of a {name}?"
        )
    try:
        net.load_state_dict(adapted, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BodymapError(f"{origin}: the weights do not fit encoder {name} ({detail})") from None
