"""The params schema of the stages: one strict section per stage, the shared field types and the `Strict` base.

Every key is declared here (the cluster section in `bodymap.cluster_schema`, the whole tree and its loading in
`bodymap.config`). Unknown keys, wrong types and out-of-range values are rejected with the key's full path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

STAGES = ("template", "render", "cse_init", "pseudo_gt", "pretrain", "finetune", "evaluate", "register")
# Sections no stage owns: read by every stage that needs them (in dvc.yaml's `params:` and the KFP components).
SHARED_SECTIONS = ("data",)

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
    cse_train_images: Count = 1600
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
    train_crop: train on windows of this many pixels square around a random person pixel, at full resolution (the
    network is convolutional and infers on whole images); null trains on whole images.
    workers: processes that share the inference on the image sets after training (shards of their batches, merged
    into the files one process writes; `bodymap.shards`).
    """

    backbone: str = "resnet18"
    embed_dim: PositiveInt = 16
    input_scale: Annotated[float, Field(gt=0, le=1)] = 1.0
    train_crop: Annotated[int, Field(ge=16)] | None = 96
    sigma_geodesic_m: PositiveFloat = 0.05
    sigma_embedding: PositiveFloat = 0.2
    pixels_per_image: PositiveInt = 64
    embed_weight: NonNegFloat = 1.0
    foreground_weight: NonNegFloat = 1.0
    flip_probability: Probability = 0.5
    vertex_chunk: PositiveInt = 16384
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    # Sized for the 2-core default run (3,400 steps on 96-pixel windows: about 19.5 minutes of training on the
    # 2-core machine measured). Chosen on val: 1,700 / 2,550 / 3,400 steps put 29.8 / 39.8 / 53.0 % of val pixels
    # within 10 cm; on these cores the accuracy per minute comes from CSE's steps (benchmarks/learning_curve.py).
    # Real scale is tens of thousands of steps on GPUs.
    train: TrainParams = TrainParams(steps=3400, lr=5e-3, warmup_steps=20)


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
    cse_prior: whether the heads add the CSE estimate to their logits (a residual prior) besides encoding it;
    "gated": that prior scaled per pixel by a gate the network learns.
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
    cse_prior: bool | Literal["gated"] | None = None


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

    @model_validator(mode="after")
    def _some_term(self) -> LossParams:
        if not any(w > 0 for w in (self.classification, self.silhouette, self.geodesic, self.consistency)):
            raise ValueError("every loss weight is 0: enable at least one of classification, silhouette, geodesic")
        return self


class AugmentParams(Strict):
    upper_body_crop: Probability = 0.1
    rotation_deg: NonNegFloat = 15.0
    hue: NonNegFloat = 0.05
    saturation: NonNegFloat = 0.2
    flip: Probability = 0.5
    cse_dropout: Probability = 0.0


class PretrainParams(Strict):
    model: ModelParams = ModelParams()
    losses: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()
    # Sized for the 2-core default run (~2 minutes of training at patch 16): twice the steps buy +0.5 within 10 cm
    # (benchmarks/results/learning_curve.md), a doubling of the CSE steps +10; the minutes go to CSE.
    train: TrainParams = TrainParams(steps=200, batch_size=4, warmup_steps=40)


class FlowParams(Strict):
    """Slim DensePose label propagation along estimated optical flow."""

    enabled: bool = True
    window: PositiveInt = 3
    method: Literal["dis", "farneback"] = "dis"
    max_fb_error_px: PositiveFloat = 5.0
    # A moved point must land where the CSE model's foreground score is at least this; 0 trusts the flow check alone.
    min_foreground: Annotated[float, Field(ge=0, le=1)] = 0.5


class PseudoGtParams(Strict):
    """Dense pseudo ground truth from sparse points + CSE (on the DensePose-COCO set of `data.coco`)."""

    correction_sigma_px: PositiveFloat = 6.0
    max_correction_m: PositiveFloat = 0.15
    pictures: NonNegInt = 6
    flow: FlowParams = FlowParams()


class EquivarianceParams(Strict):
    weight: NonNegFloat = 0.0
    warp: Literal["flow", "tps"] = "flow"


class FinetuneParams(Strict):
    """synthetic_images: rendered training images (the first N, all of them when the render has fewer; with their
    exact ground truth and CSE input) mixed into the fine-tuning set so that adapting to DensePose-COCO does not
    forget the synthetic people; 0: none."""

    mode: Literal["none", "sparse", "dense"] = "dense"
    use_flow_labels: bool = False
    synthetic_images: NonNegInt = 60
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


# ----------------------------------------------------------------------------------------------------------- data
class CocoLocations(Strict):
    """A real DensePose-COCO set: each split's annotation JSON and image folder. A split left null (the default)
    is the rendered coco-like one (`bodymap.data.sets`)."""

    train_annotations: str | None = None
    train_images: str | None = None
    val_annotations: str | None = None
    val_images: str | None = None
    test_annotations: str | None = None
    test_images: str | None = None


class DataParams(Strict):
    """Where the input data sets are: read by cse_init, pseudo_gt, finetune and evaluate."""

    coco: CocoLocations = CocoLocations()
