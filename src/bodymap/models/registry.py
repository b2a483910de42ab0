"""The model registry: every BodyMap network by name, one `create_model` factory, and `build_model` for params.

The registry is one literal table (no import-time side effects): a name maps to a network class and its
constructor arguments. `create_model(name, **overrides)` checks each override against the class's keyword
arguments, so a typo is an error that lists the valid ones. `model_args` gives the resolved arguments to store in
checkpoints; `create_model(name, **args)` rebuilds the same network.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bodymap.errors import BodymapError
from bodymap.models.encoders import load_pretrained_encoders
from bodymap.models.networks import BodyMapCNN, BodyMapUNet, BodyMapViT

if TYPE_CHECKING:
    from bodymap.config import ModelParams
    from bodymap.models.base import BodyMapNet


@dataclass(frozen=True)
class ModelSpec:
    """One registered configuration: the class, its constructor arguments and a line for listings."""

    cls: type[BodyMapNet]
    args: Mapping[str, Any]
    description: str = ""
    tags: tuple[str, ...] = ()


# Sizes: the defaults train on 2 CPU cores at 128 px; `bodymap_vit_large` is the paper's scale (ViT-L encoders,
# DPT-L's block indices and width), constructed in a slow test and the benchmark only. Patch 16 (64 tokens at
# 128 px) halves a training step against patch 8 (256 tokens) at the same accuracy after the default 400 steps.
_VIT_TINY = {
    "encoder": "vit_tiny_patch16_224",
    "img_size": 128,
    "patch_size": 16,
    "depth": 8,
    "out_indices": (1, 3, 5, 7),
    "features": 64,
    "drop_path_rate": 0.0,
}
_CNN = {"out_indices": (1, 2, 3, 4), "features": 64}

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "bodymap_vit": ModelSpec(
            BodyMapViT, {**_VIT_TINY, "use_correspondence": True}, "BodyMap: RGB + CSE ViTs, DPT decoder (default)"
        ),
        "bodymap_vit_rgb": ModelSpec(
            BodyMapViT, {**_VIT_TINY, "use_correspondence": False}, "BodyMap without the CSE input (RGB only)"
        ),
        "bodymap_vit_large": ModelSpec(
            BodyMapViT,
            {
                "encoder": "vit_large_patch16_224",
                "img_size": 512,
                "patch_size": 16,
                "depth": None,
                "out_indices": (5, 11, 17, 23),
                "features": 256,
                "drop_path_rate": 0.1,
                "use_correspondence": True,
            },
            "BodyMap at paper scale: two ViT-L/16 (~300M parameters each)",
            tags=("large",),
        ),
        "bodymap_resnet": ModelSpec(
            BodyMapCNN, {"encoder": "resnet18", **_CNN, "use_correspondence": True}, "Table 5: ResNet-18 backbones"
        ),
        "bodymap_efficientnet": ModelSpec(
            BodyMapCNN,
            {"encoder": "efficientnet_b0", **_CNN, "use_correspondence": True},
            "Table 5: EfficientNet-B0 backbones",
        ),
        "bodymap_unet": ModelSpec(
            BodyMapUNet,
            {"widths": (16, 32, 64, 128, 256), "use_correspondence": True},
            "Table 5: U-Net per stream, U-Net decoder",
        ),
    }
)

DEFAULT_MODEL = "bodymap_vit"


def list_models(include_large: bool = True) -> list[str]:
    """Registered names (the paper-scale ones only with `include_large`)."""
    return [name for name, spec in MODELS.items() if include_large or "large" not in spec.tags]


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise BodymapError(f"unknown model {name!r}; registered models: {', '.join(MODELS)}")
    return MODELS[name]


def model_args(name: str, **overrides: Any) -> dict[str, Any]:
    """The constructor arguments `name` resolves to with `overrides` applied (what a checkpoint stores).

    Raises:
        BodymapError: unknown name, or an override the network does not take (the message lists those it does).
    """
    spec = _spec(name)
    accepted = [p for p in inspect.signature(spec.cls.__init__).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise BodymapError(f"model {name!r} ({spec.cls.__name__}) has no setting {unknown}; it takes {accepted}")
    args = {**spec.args, **overrides}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def create_model(name: str = DEFAULT_MODEL, **overrides: Any) -> BodyMapNet:
    """Build a registered network (random init, `pretrained=False` encoders), overriding constructor arguments."""
    spec = _spec(name)
    return spec.cls(**model_args(name, **overrides))


def params_overrides(params: ModelParams) -> dict[str, Any]:
    """The non-null settings of a `pretrain.model` params section, as constructor overrides (null = registry's).

    `pretrained` is not one: it says where the encoders start (`build_model`), not what the network is, so it is
    not in the arguments a checkpoint stores and a checkpoint rebuilds without the weights file."""
    data = params.model_dump()
    data.pop("name")
    data.pop("pretrained", None)
    return {k: v for k, v in data.items() if v is not None}


def build_model(params: ModelParams, **overrides: Any) -> BodyMapNet:
    """Translate a `ModelParams` section into `create_model(name, **settings)`; `overrides` win over params.

    A setting the chosen network does not take is an error naming it and the settings it does take. With
    `pretrained` set, the encoders start from those weights (`bodymap.models.encoders.load_pretrained_encoders`).
    """
    settings = {**params_overrides(params), **overrides}
    try:
        model = create_model(params.name, **settings)
        if params.pretrained:
            load_pretrained_encoders(model, params.pretrained)
    except BodymapError as exc:
        raise BodymapError(f"model params: {exc}") from None
    return model
