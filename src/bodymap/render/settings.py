"""The renderer's settings (typed, explicit) and the splits it writes, translated once from the `render` params.

Output layout (docs/formats.md): `train/`, `val/`, `test/` (PNG + dense GT + DensePose-COCO JSON),
`coco_like/{train,val,test}/` (JPEG + sparse JSON only) with its dense GT apart in `coco_like_dense/{train,val,test}/`,
and `video/`, `video_train/`. Identities are split three ways: train, val (where defaults and the registry gate are
chosen) and test (only reported).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from bodymap.config import RenderParams
from bodymap.render.identity import OutfitOdds, ShapeRanges
from bodymap.render.scene import CameraRanges, PoseMix, SceneStyle, VideoStyle

# Images posed together in one Anny batch (per body, posing 16 at once costs about half of posing 8); fixed, so
# outputs do not depend on workers or shards.
STILL_CHUNK = 16
# Video frames per work unit: sequences are cut into pieces so workers share long sequences.
VIDEO_CHUNK = 16


@dataclass(frozen=True)
class Split:
    """One output split.

    Attributes:
        name: 'train', 'cse_train', 'val', 'test', 'coco_like/{train,val,test}', 'video' or 'video_train'.
        code: the split's random stream (item seeds are [seed, code, index]).
        count: images, or sequences for video.
        frames: frames per sequence (video; 0 for stills).
        pool: identities drawn from: 'train', 'val' or 'test'.
        directory: holds images/ and annotations.json (relative to the output root).
        gt_directory: holds gt/ and manifest.json (the same as `directory` except for the coco-like split).
        image_ext: 'png' or 'jpg'.
        style: scene style of still splits (None for video).
    """

    name: str
    code: int
    count: int
    pool: str
    directory: str
    gt_directory: str
    image_ext: str
    style: SceneStyle | None
    frames: int = 0

    @property
    def is_video(self) -> bool:
        return self.style is None

    def chunks(self) -> list[range]:
        """Work units: STILL_CHUNK consecutive images, or VIDEO_CHUNK consecutive frames of one sequence (frame
        indices `sequence * frames + frame`)."""
        if self.is_video:
            return [
                range(s * self.frames + k, s * self.frames + min(k + VIDEO_CHUNK, self.frames))
                for s in range(self.count)
                for k in range(0, self.frames, VIDEO_CHUNK)
            ]
        return [range(i, min(i + STILL_CHUNK, self.count)) for i in range(0, self.count, STILL_CHUNK)]


@dataclass(frozen=True)
class RenderSettings:
    seed: int
    image_size: int
    workers: int
    device: str
    identities: int
    val_fraction: float
    test_fraction: float
    splits: tuple[Split, ...]
    shapes: ShapeRanges
    outfits: OutfitOdds
    poses: PoseMix
    cameras: CameraRanges
    video: VideoStyle
    labelled_every: int
    points_per_person: int
    floor_probability: float
    background_dir: str | None
    contact_sheet: int
    params_hash: str
    params: dict  # the resolved `render` section, recorded in run.yaml

    def split(self, name: str) -> Split:
        return next(s for s in self.splits if s.name == name)


def params_hash(section: dict) -> str:
    """sha256 (16 hex digits) of the canonical JSON of the render params that shape the data: equal outputs, equal
    hash (`workers` is left out: it changes the speed, not the bytes)."""
    data = {k: v for k, v in section.items() if k != "workers"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _pair(r) -> tuple[float, float]:
    return float(r.lo), float(r.hi)


def build_settings(p: RenderParams) -> RenderSettings:
    """Translate the `render` params section into the renderer's settings."""
    still = SceneStyle(
        max_people=p.max_people,
        crowd_fraction=p.crowd_fraction,
        upper_body_fraction=p.camera.upper_body_fraction,
    )
    c = p.coco_like
    coco = SceneStyle(
        max_people=c.max_people,
        crowd_fraction=c.crowd_fraction,
        upper_body_fraction=0.0,
        distance_scale=_pair(c.distance_scale),
        blur_probability=c.blur_probability,
        blur_sigma_px=_pair(c.blur_sigma_px),
        noise_std=c.noise_std,
        jpeg_quality=_pair(c.jpeg_quality),
    )
    splits = (
        Split("train", 1, p.train_images, "train", "train", "train", "png", still),
        # CSE's own training images (train identities): BodyMap then trains on CSE outputs CSE did not fit, as at
        # test time. With none, CSE trains on `train`.
        Split("cse_train", 9, p.cse_train_images, "train", "cse_train", "cse_train", "png", still),
        Split("val", 7, p.val_images, "val", "val", "val", "png", still),
        Split("test", 2, p.test_images, "test", "test", "test", "png", still),
        Split("coco_like/train", 3, c.train_images, "train", "coco_like/train", "coco_like_dense/train", "jpg", coco),
        Split("coco_like/val", 4, c.val_images, "val", "coco_like/val", "coco_like_dense/val", "jpg", coco),
        Split("coco_like/test", 8, c.test_images, "test", "coco_like/test", "coco_like_dense/test", "jpg", coco),
        Split("video", 5, p.video.sequences, "test", "video", "video", "png", None, p.video.frames),
        # Training identities in motion: flow-propagated labels for fine-tuning must not come from test people.
        Split(
            "video_train",
            6,
            p.video.train_sequences,
            "train",
            "video_train",
            "video_train",
            "png",
            None,
            p.video.frames,
        ),
    )
    s, a, cam = p.shape, p.appearance, p.camera
    return RenderSettings(
        seed=p.seed,
        image_size=p.image_size,
        workers=p.workers,
        device=p.device,
        identities=p.identities,
        val_fraction=p.val_fraction,
        test_fraction=p.test_fraction,
        splits=splits,
        shapes=ShapeRanges(
            gender=_pair(s.gender),
            age=_pair(s.age),
            muscle=_pair(s.muscle),
            weight=_pair(s.weight),
            height=_pair(s.height),
            proportions=_pair(s.proportions),
        ),
        outfits=OutfitOdds(
            top=a.top_probability,
            loose_top=a.loose_top_probability,
            long_sleeves=a.long_sleeve_probability,
            trousers=a.trousers_probability,
            skirt=a.skirt_probability,
            robe=a.robe_probability,
            hair=a.hair_probability,
        ),
        poses=PoseMix(walk=p.pose.walk_fraction, crouch=p.pose.crouch_fraction, spread=p.pose.spread),
        cameras=CameraRanges(
            distance_m=_pair(cam.distance_m),
            elevation_deg=_pair(cam.elevation_deg),
            azimuth_deg=_pair(cam.azimuth_deg),
            roll_deg=_pair(cam.roll_deg),
            fov_deg=_pair(cam.fov_deg),
            jitter=cam.jitter,
        ),
        video=VideoStyle(
            frames=p.video.frames,
            max_people=p.video.max_people,
            walk_fraction=p.video.walk_fraction,
            key_every=p.video.key_every,
        ),
        labelled_every=p.video.labelled_every,
        points_per_person=c.points_per_person,
        floor_probability=a.floor_probability,
        background_dir=a.background_dir,
        contact_sheet=p.contact_sheet,
        params_hash=params_hash(p.model_dump(mode="json")),
        params=p.model_dump(mode="json"),
    )


__all__ = ["STILL_CHUNK", "VIDEO_CHUNK", "RenderSettings", "Split", "build_settings", "params_hash"]
