"""The named image sets the pipeline passes between stages, in one place.

| name | what | images and labels | dense truth |
|---|---|---|---|
| train | rendered train split | render/train | render/train/gt |
| val | rendered validation split (identities apart from train and test: choose defaults here) | render/val | its gt |
| test | rendered test split (identities apart from both: report only) | render/test | render/test/gt |
| video | rendered sequences of test identities (PoseTrack-style JSON) | render/video | render/video/gt |
| video_train | rendered sequences of train identities (flow-propagated labels) | render/video_train | its gt |
| coco_train | DensePose-COCO train: real if configured, else coco-like | JSON + image folder | coco-like only |
| coco_val | DensePose-COCO validation images (choose defaults, the registry gate), likewise | JSON + images | coco-like only |
| coco_test | DensePose-COCO test images (report only), likewise | JSON + image folder | coco-like only |

Every stage that writes per-image outputs for a set files them as `<out>/<set name>/<image key>.npz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bodymap.config import CocoLocations
from bodymap.data.images import ImageEntry, list_images
from bodymap.errors import BodymapError

SET_NAMES = ("train", "val", "test", "video", "video_train", "coco_train", "coco_val", "coco_test")


@dataclass(frozen=True)
class ImageSet:
    """One named set. `gt_kind` is how the evaluator reads it: dense (gt/ + JSON), coco (JSON only) or video."""

    name: str
    root: Path
    annotations: Path | None
    dense_truth: Path | None
    gt_kind: str

    @property
    def image_dir(self) -> Path:
        """Where `<key>.<suffix>` images are: `root/images` for rendered sets, the root for a COCO image folder."""
        return self.root / "images" if (self.root / "images").is_dir() else self.root

    def exists(self) -> bool:
        return self.root.is_dir() and (self.annotations is None or self.annotations.is_file())

    def images(self) -> list[ImageEntry]:
        return list_images(self.root, self.annotations)


def _rendered(name: str, split: Path, gt_kind: str = "dense") -> ImageSet:
    return ImageSet(name, split, split / "annotations.json", split, gt_kind)


def rendered_sets(render: Path) -> dict[str, ImageSet]:
    """The rendered sets under `render` (no DensePose-COCO set: those are `pipeline_sets`')."""
    return {
        "train": _rendered("train", render / "train"),
        "val": _rendered("val", render / "val"),
        "test": _rendered("test", render / "test"),
        "video": _rendered("video", render / "video", "video"),
        "video_train": _rendered("video_train", render / "video_train", "video"),
    }


def pipeline_sets(render: Path, coco: CocoLocations) -> dict[str, ImageSet]:
    """The sets of a pipeline run: rendered ones under `render`, DensePose-COCO ones real (`data.coco`) or coco-like."""
    sets = rendered_sets(render)
    for name, ann, images, split in (
        ("coco_train", coco.train_annotations, coco.train_images, "train"),
        ("coco_val", coco.val_annotations, coco.val_images, "val"),
        ("coco_test", coco.test_annotations, coco.test_images, "test"),
    ):
        if ann is not None:
            if images is None:
                raise BodymapError(f"data.coco.{split}_images: the image folder for {ann} is not set")
            sets[name] = ImageSet(name, Path(images), Path(ann), None, "coco")
        else:
            root = render / "coco_like" / split
            sets[name] = ImageSet(name, root, root / "annotations.json", render / "coco_like_dense" / split, "coco")
    return sets
