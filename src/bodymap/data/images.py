"""Which images a set holds, and the key every per-image output of it is filed under.

A set is an image root plus, usually, a DensePose-COCO / PoseTrack JSON whose `file_name`s are relative to the
root (rendered splits: `images/000123.png` under the split directory; real COCO: `COCO_val2014_….jpg` under the
image folder). An image's key is its file name without the suffix and without a leading `images/`
(`000123`, `003/0042`, `COCO_val2014_…`): CSE outputs, pseudo-GT, predictions and dense GT all use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bodymap.errors import BodymapError, input_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_key(file_name: str) -> str:
    """`images/003/0042.png` → `003/0042`; `COCO_val2014_x.jpg` → `COCO_val2014_x`."""
    path = Path(file_name)
    if path.parts[:1] == ("images",):
        path = path.relative_to("images")
    return str(path.with_suffix(""))


@dataclass(frozen=True)
class ImageEntry:
    """One image: its COCO id, file and key."""

    image_id: int
    path: Path
    key: str


def list_images(root: Path, annotations: Path | None = None) -> list[ImageEntry]:
    """The images of a set: those named in `annotations` (default `root/annotations.json` if it exists), else every
    image file under `root/images` (ids in sorted order)."""
    root = Path(root)
    if annotations is None and (root / "annotations.json").exists():
        annotations = root / "annotations.json"
    if annotations is not None:
        try:
            images = json.loads(Path(annotations).read_text())["images"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BodymapError(f"{annotations}: cannot read its 'images' list ({exc})") from None
        entries = []
        for index, image in enumerate(images):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise input_error(annotations, f"images[{index}]", "file_name", "expected an object with id, file_name")
            entries.append(ImageEntry(int(image["id"]), root / image["file_name"], image_key(image["file_name"])))
        return entries
    folder = root / "images"
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BodymapError(f"{folder}: no images (.png, .jpg) and no annotations.json in {root}")
    return [ImageEntry(i, p, image_key(str(p.relative_to(root)))) for i, p in enumerate(files)]
