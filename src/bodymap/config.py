"""The params schema: one strict section per stage, loading from YAML, command-line overrides and error messages.

Every key is declared here. Unknown keys, wrong types and out-of-range values are rejected with the key's full
path, the bad value and what was expected, e.g. `render.image_size: expected a positive int, got "big"`.
Stages receive their own section; `build_*` functions in the library translate a section into explicit keyword
arguments, so no module below the CLI ever sees the whole config.
"""

from __future__ import annotations

import json
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from bodymap.errors import BodymapError

STAGES = ("template", "render", "cse_init", "pseudo_gt", "pretrain", "finetune", "evaluate", "register")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Device = Literal["auto", "cpu", "cuda"]


class Strict(BaseModel):
    """Base for every section: unknown keys and type coercions are errors; values are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Range(Strict):
    """A closed interval [lo, hi] to sample from uniformly."""

    lo: float
    hi: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")
        return self


# --------------------------------------------------------------------------------------------------------- template
class AnnyShape(Strict):
    """Anny phenotype values in [0, 1]; 0.5 everywhere is Anny's neutral adult."""

    gender: Probability = 0.5
    age: Probability = 0.5
    muscle: Probability = 0.5
    weight: Probability = 0.5
    height: Probability = 0.5
    proportions: Probability = 0.5


class MeshTemplate(Strict):
    """Another template (e.g. SMPL with DensePose's UV data): a mesh file and a per-vertex chart file."""

    path: str | None = None
    charts: str | None = None
    name: str = "custom"


class DensePoseTemplate(Strict):
    """SMPL with DensePose's own atlas: the template real DensePose-COCO / PoseTrack IUV points are written on.

    model: an SMPL model file (.pkl / .npz with v_template and f) or a mesh of it (.obj, .ply, .npz vertices/faces);
    uv_data: DensePose's `UV_Processed.mat`; symmetry: optional [V] mirror map (.npy) when the mesh is not mirror
    symmetric to 1 mm.
    """

    model: str | None = None
    uv_data: str | None = None
    symmetry: str | None = None
    name: str = "smpl"


class Geodesics(Strict):
    """How all-pairs geodesic distances are stored.

    dense: the full [V, V] float16 matrix from fast marching (template/geodesic.py: ~0.15 cm mean error vs exact).
    landmarks: distances from `landmarks` farthest-point samples to every vertex ([K, V] float16); a pair is
    looked up through the nearer endpoint's sample (error bounded by the sampling radius).
    """

    mode: Literal["dense", "landmarks"] = "dense"
    landmarks: PositiveInt = 1024
    workers: PositiveInt = 2


class TemplateParams(Strict):
    source: Literal["anny", "mesh", "densepose"] = "anny"
    anny_topology: str = "anny"
    shape: AnnyShape = AnnyShape()
    mesh: MeshTemplate = MeshTemplate()
    densepose: DensePoseTemplate = DensePoseTemplate()
    geodesics: Geodesics = Geodesics()
    lbo_k: PositiveInt = 64
    picture_size: PositiveInt = 512


# ----------------------------------------------------------------------------------------------------------- render
Count = Annotated[int, Field(ge=0, le=10_000_000)]
People = Annotated[int, Field(ge=1, le=20)]


class UnitRange(Strict):
    """A closed interval [lo, hi] inside [0, 1] to sample from uniformly."""

    lo: Probability
    hi: Probability

    @model_validator(mode="after")
    def _ordered(self) -> UnitRange:
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")
        return self


def _within(name: str, r: Range, lo: float, hi: float) -> None:
    if r.lo < lo or r.hi > hi:
        raise ValueError(f"{name} must lie within [{lo}, {hi}], got [{r.lo}, {r.hi}]")


class ShapeParams(Strict):
    """Anny phenotype ranges identities are drawn from (Anny units: age 1/3 = child, 2/3 = young adult, 1 = old)."""

    gender: UnitRange = UnitRange(lo=0.0, hi=1.0)
    age: UnitRange = UnitRange(lo=0.4, hi=1.0)
    muscle: UnitRange = UnitRange(lo=0.1, hi=0.9)
    weight: UnitRange = UnitRange(lo=0.1, hi=0.9)
    height: UnitRange = UnitRange(lo=0.1, hi=0.9)
    proportions: UnitRange = UnitRange(lo=0.2, hi=0.8)


class PoseParams(Strict):
    """Still poses: walk-cycle and crouching shares (the rest are free random poses within joint limits); `spread`
    is how far free poses stray from neutral, as a fraction of each joint's range."""

    walk_fraction: Probability = 0.3
    crouch_fraction: Probability = 0.1
    spread: Probability = 0.6

    @model_validator(mode="after")
    def _shares(self) -> PoseParams:
        if self.walk_fraction + self.crouch_fraction > 1:
            raise ValueError("walk_fraction + crouch_fraction must not exceed 1")
        return self


class CameraParams(Strict):
    """Orbit camera around the people (degrees; azimuth 0 = in front of the first person); `jitter` moves the
    look-at point off-centre by up to this fraction of the half frame."""

    distance_m: Range = Range(lo=2.0, hi=3.6)
    elevation_deg: Range = Range(lo=-10.0, hi=25.0)
    azimuth_deg: Range = Range(lo=-180.0, hi=180.0)
    roll_deg: Range = Range(lo=-8.0, hi=8.0)
    fov_deg: Range = Range(lo=32.0, hi=50.0)
    upper_body_fraction: Probability = 0.15
    jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.15

    @model_validator(mode="after")
    def _bounds(self) -> CameraParams:
        _within("distance_m", self.distance_m, 0.3, 100.0)
        _within("elevation_deg", self.elevation_deg, -80.0, 80.0)
        _within("azimuth_deg", self.azimuth_deg, -360.0, 360.0)
        _within("roll_deg", self.roll_deg, -90.0, 90.0)
        _within("fov_deg", self.fov_deg, 5.0, 120.0)
        return self


class AppearanceParams(Strict):
    """Outfit odds per identity (trousers + skirt + robe <= 1; otherwise shorts; `top_probability` applies to adult
    male-leaning bodies, everyone else always wears a top), hair, and backgrounds: procedural (a floor plane with
    `floor_probability`) or random crops of the images in `background_dir`."""

    top_probability: Probability = 0.85
    loose_top_probability: Probability = 0.4
    long_sleeve_probability: Probability = 0.5
    trousers_probability: Probability = 0.55
    skirt_probability: Probability = 0.2
    robe_probability: Probability = 0.1
    hair_probability: Probability = 0.85
    floor_probability: Probability = 0.6
    background_dir: str | None = None

    @model_validator(mode="after")
    def _bottoms(self) -> AppearanceParams:
        if self.trousers_probability + self.skirt_probability + self.robe_probability > 1:
            raise ValueError("trousers_probability + skirt_probability + robe_probability must not exceed 1")
        return self


class CocoLikeParams(Strict):
    """The crowded, degraded split written only as sparse DensePose-COCO annotations (train, val and test from the
    train, val and test identities); people are `distance_scale` times farther than in train/val/test."""

    train_images: Count = 60
    val_images: Count = 30
    test_images: Count = 30
    max_people: People = 4
    crowd_fraction: Probability = 0.7
    points_per_person: Annotated[int, Field(ge=1, le=10_000)] = 100
    distance_scale: Range = Range(lo=1.2, hi=2.2)
    blur_probability: Probability = 0.3
    blur_sigma_px: Range = Range(lo=0.5, hi=1.5)
    noise_std: Annotated[float, Field(ge=0, le=0.5)] = 0.02
    jpeg_quality: Range = Range(lo=40.0, hi=90.0)

    @model_validator(mode="after")
    def _bounds(self) -> CocoLikeParams:
        _within("distance_scale", self.distance_scale, 0.1, 20.0)
        _within("blur_sigma_px", self.blur_sigma_px, 0.0, 10.0)
        _within("jpeg_quality", self.jpeg_quality, 1.0, 100.0)
        return self


class VideoParams(Strict):
    """Sequences of test identities (`video/`, scored for temporal consistency) and of train identities
    (`video_train/`, where Slim DensePose's flow propagation makes training labels): a walk cycle (`walk_fraction`)
    or eased key poses every `key_every` frames; `dp_*` points on every `labelled_every`-th frame. 121 frames allow
    the 120-frame temporal metric."""

    sequences: Count = 2
    train_sequences: Count = 1
    frames: Annotated[int, Field(ge=2, le=100_000)] = 121
    labelled_every: Annotated[int, Field(ge=1, le=100_000)] = 4
    max_people: People = 2
    walk_fraction: Probability = 0.5
    key_every: Annotated[int, Field(ge=2, le=100_000)] = 30


class RenderParams(Strict):
    """`bodymap render`: synthetic people with exact dense GT (see `bodymap.render`). Identities are split into
    train / val / test by `val_fraction` and `test_fraction` (defaults and the registry gate are chosen on val, test
    is only reported); `cse_train_images` > 0 renders CSE its own training split (train identities, other images)
    so BodyMap learns from CSE estimates of images CSE was not fitted to; `crowd_fraction` of the still images hold
    2..`max_people` people; `workers` processes render in parallel (outputs do not depend on it); `contact_sheet`
    samples go on the overview picture."""

    seed: Count = 0
    image_size: PositiveInt = 128
    workers: Annotated[int, Field(ge=1, le=256)] = 2
    device: Device = "auto"
    identities: Annotated[int, Field(ge=3, le=100_000)] = 48
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    train_images: Count = 400
    cse_train_images: Count = 0
    val_images: Count = 40
    test_images: Count = 60
    crowd_fraction: Probability = 0.25
    max_people: People = 3
    contact_sheet: Annotated[int, Field(ge=0, le=64)] = 12
    shape: ShapeParams = ShapeParams()
    pose: PoseParams = PoseParams()
    camera: CameraParams = CameraParams()
    appearance: AppearanceParams = AppearanceParams()
    coco_like: CocoLikeParams = CocoLikeParams()
    video: VideoParams = VideoParams()


# -------------------------------------------------------------------------------------------------------- training
class TrainParams(Strict):
    """One training run of the shared loop (`bodymap.train`).

    amp: mixed precision. `amp_dtype` float16 (with loss scaling) runs on CUDA only, and on the CPU the run stays
    float32; bfloat16 (no loss scaling) runs on CUDA (Ampere and later; V100s emulate it slowly) and on the CPU.
    The losses always run in float32.
    """

    steps: PositiveInt = 200
    batch_size: PositiveInt = 8
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegFloat = 0.01
    warmup_steps: NonNegInt = 20
    grad_clip: NonNegFloat = 1.0
    checkpoint_every: PositiveInt = 100
    log_every: PositiveInt = 10
    seed: NonNegInt = 0
    device: Device = "auto"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    workers: NonNegInt = 0
    # torch's CPU threads for this stage's training and inference. Results depend on the count (not on the cores),
    # so it is fixed: a 2-core laptop and a 64-core server write the same bytes (docs/formats.md, Reproducibility).
    threads: Annotated[int, Field(ge=1, le=256)] = 2


class CseParams(Strict):
    """CSE (Neverova et al. 2020) as BodyMap's initialisation.

    sigma_geodesic_m: width of the geodesic target softmax(-d / sigma_g). sigma_embedding: temperature of the
    embedding distances (vertex embeddings are unit vectors, so squared distances lie in [0, 4]).
    input_scale: the encoder runs on the image resized by this factor (outputs stay at input size).
    workers: processes that share the inference on the image sets after training (shards of their batches, merged
    into the files one process writes; `bodymap.shards`).
    """

    backbone: str = "resnet18"
    embed_dim: PositiveInt = 16
    input_scale: Annotated[float, Field(gt=0, le=1)] = 1.0
    sigma_geodesic_m: PositiveFloat = 0.05
    sigma_embedding: PositiveFloat = 0.2
    pixels_per_image: PositiveInt = 64
    embed_weight: NonNegFloat = 1.0
    foreground_weight: NonNegFloat = 1.0
    flip_probability: Probability = 0.5
    vertex_chunk: PositiveInt = 16384
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    # Sized for the 2-core default run (~3 minutes); real scale is tens of thousands of steps on GPUs.
    train: TrainParams = TrainParams(steps=300, lr=5e-3, warmup_steps=20)


class ModelParams(Strict):
    """BodyMap network by registry name (`bodymap.models.list_models()`), with the sizes worth changing from params.

    Every size left null takes the registered network's value (`bodymap.models.MODELS`), so switching `name`
    (e.g. to `bodymap_vit_large` or `bodymap_resnet`) needs no other key. A key the chosen network does not take
    (e.g. `patch_size` for a CNN) is an error. encoder: timm name of both encoders. img_size: ViT position-embedding
    size. patch_size, depth: ViT token stride and blocks. out_indices: ViT blocks / CNN levels fed to the decoder.
    features: decoder width. pretrained: where both encoders start: false (random), true (timm's pretrained
    weights for `encoder`, ImageNet, from the Hugging Face hub), a timm hub name (`vit_large_patch16_224.augreg_in21k`,
    `hf-hub:timm/...`), or a local weights file (.pth, .pt, .bin, .safetensors; a timm state dict of the encoder).
    stem: channels of the ViTs' convolutional stem ([] for the plain patchify stem).
    num_bins: classes per colour channel (256: one per colour value, the paper's; fewer classify coarser).
    """

    name: str = "bodymap_vit"
    encoder: str | None = None
    img_size: PositiveInt | None = None
    patch_size: PositiveInt | None = None
    depth: PositiveInt | None = None
    out_indices: list[NonNegInt] | None = None
    features: PositiveInt | None = None
    pretrained: bool | Annotated[str, Field(min_length=1)] = False
    stem: list[PositiveInt] | None = None
    num_bins: Annotated[int, Field(ge=2, le=256)] | None = None


class LossParams(Strict):
    """BodyMap loss weights (0 disables a term; `bodymap.losses.total_loss`) and their sampling sizes.

    geodesic_pixels: labelled pixels per image drawn for the geodesic and consistency terms (bounds memory: each
    costs a [V] soft assignment). consistency_references: reference pixels per image (BodyMap Eq. 2: 100).
    hand_weight, head_weight: classification weight of hand and head pixels (BodyMap Sec. 3.3).
    label_sigma_cm: Gaussian colour targets this wide on the body, cm; 0 is the paper's one-hot cross-entropy.
    """

    classification: NonNegFloat = 1.0
    silhouette: NonNegFloat = 1.0
    geodesic: NonNegFloat = 0.5
    consistency: NonNegFloat = 0.1
    geodesic_pixels: PositiveInt = 64
    consistency_references: PositiveInt = 100
    hand_weight: PositiveFloat = 2.0
    head_weight: PositiveFloat = 2.0
    label_sigma_cm: NonNegFloat = 0.0


class AugmentParams(Strict):
    upper_body_crop: Probability = 0.1
    rotation_deg: NonNegFloat = 15.0
    hue: NonNegFloat = 0.05
    saturation: NonNegFloat = 0.2
    flip: Probability = 0.5


class PretrainParams(Strict):
    model: ModelParams = ModelParams()
    losses: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()
    # Sized for the 2-core default run (~15 minutes): at 200 steps BodyMap barely moved off its CSE input.
    train: TrainParams = TrainParams(steps=800, batch_size=4, warmup_steps=40)


class FlowParams(Strict):
    """Slim DensePose label propagation along estimated optical flow."""

    enabled: bool = True
    window: PositiveInt = 3
    method: Literal["dis", "farneback"] = "dis"
    max_fb_error_px: PositiveFloat = 5.0
    # A moved point must land where the CSE model's foreground score is at least this; 0 trusts the flow check alone.
    min_foreground: Annotated[float, Field(ge=0, le=1)] = 0.5


class PseudoGtParams(Strict):
    """Dense pseudo ground truth from sparse points + CSE. `coco_*` point to a real DensePose-COCO set."""

    coco_annotations: str | None = None
    coco_images: str | None = None
    coco_val_annotations: str | None = None
    coco_val_images: str | None = None
    coco_test_annotations: str | None = None
    coco_test_images: str | None = None
    correction_sigma_px: PositiveFloat = 6.0
    max_correction_m: PositiveFloat = 0.15
    pictures: NonNegInt = 6
    flow: FlowParams = FlowParams()


class EquivarianceParams(Strict):
    weight: NonNegFloat = 0.0
    warp: Literal["flow", "tps"] = "flow"


class FinetuneParams(Strict):
    mode: Literal["none", "sparse", "dense"] = "dense"
    use_flow_labels: bool = False
    losses: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()
    equivariance: EquivarianceParams = EquivarianceParams()
    train: TrainParams = TrainParams(steps=60, batch_size=4, lr=3e-4, warmup_steps=5)


# ------------------------------------------------------------------------------------------------------- evaluate
class EvaluateParams(Strict):
    """`bodymap evaluate` (definitions in the `bodymap.eval` module docstrings; DensePose AP settings are fixed by
    detectron2's evaluator).

    windows_px: pixel-window radii w (BodyMap Table 2), reported as image pixels and scaled to a person
    reference_height_px tall. geodesic_cm: geodesic accuracy radii (Slim DensePose). temporal_intervals: frame gaps
    k (BodyMap Table 4); a match when the model's place of a vertex in the later frame is within temporal_window_px
    (at the reference height) of where the body carried it, the model's nearest prediction within temporal_tau_cm.
    kappa: GPS normalisation, per_part (detectron2) or global (0.255). max_detections: detections per image for AP
    (detectron2: 20). min_instance_pixels: dense predictions split into instances drop smaller ones.
    visualisations: images drawn per evaluation set. workers: processes that share the `evaluate` stage's
    predictions (shards of each set's batches, merged into the files one process writes; `bodymap.shards`).
    """

    windows_px: Annotated[list[PositiveInt], Field(min_length=1, max_length=16)] = [5, 10, 20]
    geodesic_cm: Annotated[list[PositiveFloat], Field(min_length=1, max_length=16)] = [5.0, 10.0, 20.0]
    reference_height_px: PositiveFloat = 1024.0
    temporal_intervals: Annotated[list[PositiveInt], Field(min_length=1, max_length=16)] = [1, 12, 120]
    temporal_tau_cm: PositiveFloat = 5.0
    temporal_window_px: PositiveFloat = 32.0
    kappa: Literal["per_part", "global"] = "per_part"
    max_detections: Annotated[int, Field(gt=0, le=1000)] = 20
    min_instance_pixels: NonNegInt = 16
    visualisations: Annotated[int, Field(ge=0, le=1000)] = 4
    # torch's CPU threads when this stage predicts (`--model`): fixed, as `train.threads`.
    threads: Annotated[int, Field(ge=1, le=256)] = 2
    workers: Annotated[int, Field(ge=1, le=256)] = 1


class RegisterParams(Strict):
    """The registry gate. Metric keys are those of the evaluate stage's metrics.json (`<model>/<set>/<metric>`).

    A new version becomes `champion` when `primary_metric` beats the champion's by more than `margin` and no
    guard metric drops by more than its allowance (in the metric's units, points of percent or AP).
    """

    model_name: str = "bodymap"
    experiment: str = "bodymap"
    primary_metric: str = "bodymap/coco_val/gpsm_ap"
    margin: NonNegFloat = 0.0
    guard_metrics: dict[str, NonNegFloat] = {"bodymap/val/window_10px": 5.0, "bodymap/val/gpsm_ap": 5.0}


# --------------------------------------------------------------------------------------------------------- cluster
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def _k8s_name(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError("expected a Kubernetes name (lower-case letters, digits and '-', at most 63 characters)")
    return value


def _qualified_name(value: str) -> str:
    """A label key or extended resource name: `[prefix/]name`, e.g. `nvidia.com/gpu.product`."""
    prefix, _, name = value.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name) or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError("expected a Kubernetes qualified name such as nvidia.com/gpu.product")
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValueError("expected a Kubernetes label value (letters, digits, '-', '_', '.', at most 63 characters)")
    return value


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError("expected a Kubernetes quantity such as 8, 500m or 48Gi")
    return value


def _image(value: str) -> str:
    if not value or len(value) > 500 or any(c.isspace() for c in value):
        raise ValueError("expected a container image reference such as registry.example.com/bodymap:0.1.0")
    return value


K8sName = Annotated[str, AfterValidator(_k8s_name)]
QualifiedName = Annotated[str, AfterValidator(_qualified_name)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
Quantity = Annotated[str, AfterValidator(_quantity)]
Image = Annotated[str, AfterValidator(_image)]


class TolerationParams(Strict):
    """The toleration for the GPU nodes' taint: `Exists` matches any value, `Equal` needs `value`."""

    key: QualifiedName = "nvidia.com/gpu"
    operator: Literal["Exists", "Equal"] = "Exists"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    @model_validator(mode="after")
    def _value_matches_operator(self) -> TolerationParams:
        if (self.operator == "Equal") != (self.value is not None):
            raise ValueError("operator Equal needs a value and operator Exists takes none")
        return self


class ClusterParams(Strict):
    """Multi-node training on Kubernetes (`bodymap.cluster`): not a stage, read by the launcher and the KFP pipeline.

    `launcher` picks the job kind: a Kubeflow Trainer `TrainJob` on the `runtime` ClusterTrainingRuntime, or a
    `PyTorchJob` for clusters on the older Kubeflow training operator. Credentials reach the pods only as
    environment variables from the two Secrets named here (see k8s/secrets/). `shards` > 1 fans CSE inference and
    the evaluation's predictions out over that many pods of the KFP pipeline (`dsl.ParallelFor`), merged after.
    """

    launcher: Literal["trainjob", "pytorchjob"] = "trainjob"
    runtime: K8sName = "torch-distributed"
    namespace: K8sName = "bodymap"
    image: Image = "registry.example.com/bodymap:0.1.0"
    service_account: K8sName = "bodymap-trainer"
    nodes: Annotated[int, Field(ge=1, le=256)] = 1
    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    shards: Annotated[int, Field(ge=1, le=256)] = 1
    accelerator_type: QualifiedName = "nvidia.com/gpu"
    node_label_key: QualifiedName = "nvidia.com/gpu.product"
    node_label_value: LabelValue = "Tesla-V100-SXM2-16GB"
    toleration: TolerationParams = TolerationParams()
    cpu_per_node: Quantity = "8"
    memory_per_node: Quantity = "48Gi"
    shm_size: Quantity = "8Gi"
    mlflow_secret: K8sName = "bodymap-mlflow"
    s3_secret: K8sName = "bodymap-s3"
    timeout_s: Annotated[int, Field(ge=60, le=14 * 86400)] = 86400
    poll_interval_s: Annotated[float, Field(ge=1, le=600)] = 15.0
    api_timeout_s: Annotated[float, Field(ge=1, le=600)] = 30.0


# BaseModel inherits an unrelated `register` (from ABCMeta); the stage name wins, so silence pydantic's warning.
warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows', category=UserWarning)


class Params(Strict):
    """The whole params.yaml: one section per stage (`dvc.yaml`'s stage names), then `cluster` (not a stage)."""

    template: TemplateParams = TemplateParams()
    render: RenderParams = RenderParams()
    cse_init: CseParams = CseParams()
    pseudo_gt: PseudoGtParams = PseudoGtParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    cluster: ClusterParams = ClusterParams()


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
    """One stage's resolved parameters as plain data (what the stage records next to its outputs)."""
    if stage not in STAGES:
        raise KeyError(stage)
    return getattr(params, stage).model_dump(mode="json")


__all__ = [
    "STAGES",
    "ClusterParams",
    "Params",
    "Range",
    "apply_overrides",
    "default_params_dict",
    "load_params",
    "section",
    "validate_params",
]
