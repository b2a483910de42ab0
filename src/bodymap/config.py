"""The params tree: loading from YAML, command-line overrides and error messages; the stage sections are declared in
`bodymap.schema` and the cluster section in `bodymap.cluster_schema`, and re-exported here.

Every key is declared. Unknown keys, wrong types and out-of-range values are rejected with the key's full
path, the bad value and what was expected, e.g. `render.image_size: expected a positive int, got "big"`.
Stages read the sections they need and hand the libraries a section (`train`, `augment`, `losses`, `evaluate`,
`data.coco`) or typed arguments made from one (`render.settings.build_settings`), so no module below the stage
modules sees the whole tree (`tests/test_layers.py`). A key that moved (`MOVED`) is reported with where it went.
"""

from __future__ import annotations

import json
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from bodymap.cluster_schema import ClusterParams, TolerationParams
from bodymap.errors import BodymapError
from bodymap.schema import (
    SHARED_SECTIONS,
    STAGES,
    AugmentParams,
    CocoLocations,
    CseParams,
    DataParams,
    EvaluateParams,
    FinetuneParams,
    Geodesics,
    LossParams,
    ModelParams,
    PretrainParams,
    PseudoGtParams,
    Range,
    RegisterParams,
    RenderParams,
    Strict,
    TemplateParams,
    TrainParams,
)

# BaseModel inherits an unrelated `register` (from ABCMeta); the stage name wins, so silence pydantic's warning.
warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows', category=UserWarning)


class Params(Strict):
    """The whole params.yaml: one section per stage (`dvc.yaml`'s stage names), then `data` (the input data sets,
    read by several stages) and `cluster` (not a stage)."""

    template: TemplateParams = TemplateParams()
    render: RenderParams = RenderParams()
    cse_init: CseParams = CseParams()
    pseudo_gt: PseudoGtParams = PseudoGtParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    data: DataParams = DataParams()
    cluster: ClusterParams = ClusterParams()


# Keys an older params file may still have: path -> where the value lives now (the error message says so).
MOVED = {
    ("pseudo_gt", "coco_annotations"): "data.coco.train_annotations",
    ("pseudo_gt", "coco_images"): "data.coco.train_images",
    ("pseudo_gt", "coco_val_annotations"): "data.coco.val_annotations",
    ("pseudo_gt", "coco_val_images"): "data.coco.val_images",
    ("pseudo_gt", "coco_test_annotations"): "data.coco.test_annotations",
    ("pseudo_gt", "coco_test_images"): "data.coco.test_images",
}


# ------------------------------------------------------------------------------------------- loading and messages
def _target_at(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, list[Any]] | None:
    """(annotation, constraint metadata) of the value an error location points at, or None if unknown."""
    annotation: Any = model
    metadata: list[Any] = []
    for key in loc:
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and key in annotation.model_fields:
            field = annotation.model_fields[key]
            annotation, metadata = field.annotation, list(field.metadata)
        elif origin in (list, dict) and typing.get_args(annotation):
            annotation, metadata = typing.get_args(annotation)[-1], []
        else:
            return None
        if typing.get_origin(annotation) is Annotated:
            base, *extra = typing.get_args(annotation)
            annotation = base
            for item in extra:
                metadata += list(getattr(item, "metadata", [item]))
    return annotation, metadata


_TYPE_WORDS = {int: "int", float: "number", str: "string", bool: "boolean (true/false)", type(None): "null"}


def _describe_annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_annotation(a) for a in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"a list of {_describe_annotation(item)}s"
    if origin is dict:
        return "a mapping"
    if origin is Annotated:
        return _describe(*_unwrap(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"a mapping with keys {', '.join(annotation.model_fields)}"
    word = _TYPE_WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return word if word == "null" else f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    base, *extra = typing.get_args(annotation)
    return base, [m for item in extra for m in getattr(item, "metadata", [item])]


def _describe(annotation: Any, metadata: list[Any]) -> str:
    """e.g. 'a positive int', 'a number in [0, 1]', 'one of "dense", "landmarks"'."""
    base = _describe_annotation(annotation)
    bounds = {type(m).__name__: m for m in metadata}
    gt, ge, lt, le = (bounds.get(n) for n in ("Gt", "Ge", "Lt", "Le"))
    article = "an " if base.startswith("an ") else "a "
    if gt is not None and gt.gt == 0 and lt is None and le is None:
        return "a positive " + base.removeprefix(article)
    if ge is not None and ge.ge == 0 and lt is None and le is None:
        return "a non-negative " + base.removeprefix(article)
    if (gt or ge) and (lt or le):
        left = f"({gt.gt}" if gt else f"[{ge.ge}"
        right = f"{lt.lt})" if lt else f"{le.le}]"
        return f"{base} in {left}, {right}"
    return base


def _format_error(error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    got = json.dumps(error["input"], default=str) if error["type"] != "missing" else "nothing"
    if error["type"] == "extra_forbidden":
        if loc in MOVED:
            return f"{path}: moved to {MOVED[loc]}"
        parent = _target_at(model, loc[:-1])
        owner = parent[0] if parent is not None else None
        known = ", ".join(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else ""
        return f"{path}: unknown key" + (f" (known keys here: {known})" if known else "")
    if error["type"] == "value_error":
        return f"{path}: {error['msg'].removeprefix('Value error, ')}, got {got}"
    target = _target_at(model, loc)
    expected = _describe(*target) if target is not None else error["msg"].removeprefix("Input should be ")
    return f"{path}: expected {expected}, got {got}"


def validate_params(data: Any, source: str = "params") -> Params:
    """Validate a raw mapping against the schema; raise `BodymapError` naming the source file and every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BodymapError(f"{source}: expected a mapping of stage sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        messages = [_format_error(e, Params) for e in exc.errors()]
        raise BodymapError(f"{source}: " + "; ".join(messages)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value`; the value is read as YAML, so `128` is an int, `[1, 2]` a list and `null` None."""
    if "=" not in text:
        raise BodymapError(f"--set {text}: expected KEY.PATH=VALUE, e.g. render.image_size=128")
    key, _, raw = text.partition("=")
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise BodymapError(f"--set {text}: empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise BodymapError(f"--set {text}: value is not valid YAML ({exc})") from None
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of raw params with every `KEY.PATH=VALUE` override set (validation happens afterwards)."""
    data = json.loads(json.dumps(data or {}))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise BodymapError(f"--set {text}: {'.'.join(keys[: depth + 1])} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load params from YAML (defaults when `path` is None or missing and not required), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise BodymapError(f"{path}: cannot read params file ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise BodymapError(f"{path}: not valid YAML ({exc})") from None
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with --set " + " ".join(overrides)
    return validate_params(data, source)


def default_params_dict() -> dict[str, Any]:
    """The defaults as plain data, in schema order (what params.yaml starts from)."""
    return Params().model_dump(mode="json")


def section(params: Params, stage: str) -> dict[str, Any]:
    """One stage's (or shared section's) resolved parameters as plain data (what the stage records next to its
    outputs)."""
    if stage not in STAGES and stage not in SHARED_SECTIONS:
        raise KeyError(stage)
    return getattr(params, stage).model_dump(mode="json")


__all__ = [
    "MOVED",
    "SHARED_SECTIONS",
    "STAGES",
    "AugmentParams",
    "ClusterParams",
    "CocoLocations",
    "CseParams",
    "DataParams",
    "EvaluateParams",
    "FinetuneParams",
    "Geodesics",
    "LossParams",
    "ModelParams",
    "Params",
    "PretrainParams",
    "PseudoGtParams",
    "Range",
    "RegisterParams",
    "RenderParams",
    "Strict",
    "TemplateParams",
    "TolerationParams",
    "TrainParams",
    "apply_overrides",
    "default_params_dict",
    "load_params",
    "parse_override",
    "section",
    "validate_params",
]
