"""DensePose-COCO annotations from a rendered frame: boxes, RLE masks, COCO keypoints and sparse `dp_*` points.

Follows the DensePose-COCO conventions (docs/formats.md): `dp_x`, `dp_y` in [0, 255] relative to the box scaled to
256 x 256 (image position = dp_x * w / 255 + x), `dp_masks` as 14 compressed RLEs on the 256 x 256 box grid, and the
CSE fields `dp_vertex` and `ref_model`. Points are sampled at pixel centres, so the dense GT at
`floor(dp_x * w / 255 + x)` is exactly the point's `dp_vertex`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_util

from bodymap.densepose import CHART_TO_PART
from bodymap.template.mesh import BodyTemplate

if TYPE_CHECKING:
    from bodymap.render.renderer import Frame

COCO_KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
CATEGORIES = [
    {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO_KEYPOINT_NAMES),
        "skeleton": COCO_SKELETON,
    }
]
# People smaller than this (visible pixels) get a box, mask and keypoints but no dp_* points: too few pixels to
# spread ~100 points over, like the unlabelled small people of DensePose-COCO.
MIN_DP_AREA = 64
DP_GRID = 256


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a [H, W] bool mask, `counts` as a string (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def dp_masks(part: np.ndarray, bbox: tuple[int, int, int, int]) -> list:
    """The 14 coarse-part masks of one person on the 256 x 256 box grid (`[]` for an absent part).

    Args:
        part: [H, W] uint8 coarse part (1..14) of this person's pixels, 0 elsewhere.
        bbox: (x, y, w, h) integer pixel box.
    """
    x, y, w, h = bbox
    # Nearest pixel to each grid cell centre (the inverse of the dp_x mapping).
    cols = np.minimum(x + ((np.arange(DP_GRID) + 0.5) * w / DP_GRID).astype(np.int64), x + w - 1)
    rows = np.minimum(y + ((np.arange(DP_GRID) + 0.5) * h / DP_GRID).astype(np.int64), y + h - 1)
    # Column-major grid: pycocotools encodes Fortran-ordered masks, and per-part comparisons then stay contiguous.
    grid = np.asfortranarray(part[rows][:, cols])
    present = np.flatnonzero(np.bincount(grid.ravel(order="K"), minlength=15)[1:15]) + 1
    out: list = [[] for _ in range(14)]
    for k in present:
        rle = mask_util.encode((grid == k).astype(np.uint8, order="F"))
        out[int(k) - 1] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return out


def annotate_frame(
    frame: Frame,
    template: BodyTemplate,
    rng: np.random.Generator,
    image_id: int,
    points_per_person: int,
    with_points: bool = True,
    track_ids: list[int] | None = None,
) -> list[dict]:
    """One COCO annotation per visible person of `frame`; `dp_*` on people of at least MIN_DP_AREA pixels when
    `with_points`. Annotation ids are `image_id * 100 + person + 1` (at most 99 people per image)."""
    annotations = []
    part_of_pixel = CHART_TO_PART[frame.chart]
    for i in range(len(frame.people)):
        mask = frame.person == i
        area = int(mask.sum())
        if area == 0:
            continue
        rows, cols = np.nonzero(mask)
        x, y = int(cols.min()), int(rows.min())
        w, h = int(cols.max()) + 1 - x, int(rows.max()) + 1 - y
        kp = frame.keypoints[i]
        ann = {
            "id": image_id * 100 + i + 1,
            "image_id": image_id,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [x, y, w, h],
            "area": area,
            "segmentation": encode_rle(mask),
            "keypoints": [v for row in kp for v in (round(float(row[0]), 2), round(float(row[1]), 2), int(row[2]))],
            "num_keypoints": int((kp[:, 2] > 0).sum()),
        }
        if track_ids is not None:
            ann["track_id"] = int(track_ids[i])
        if with_points and area >= MIN_DP_AREA:
            pick = rng.choice(area, size=min(points_per_person, area), replace=False)
            pr, pc = rows[pick], cols[pick]
            vertex = frame.vertex[pr, pc]
            ann.update(
                dp_x=[round(float(v), 4) for v in (pc + 0.5 - x) * 255.0 / w],
                dp_y=[round(float(v), 4) for v in (pr + 0.5 - y) * 255.0 / h],
                dp_I=[int(c) for c in template.chart[vertex]],
                dp_U=[round(float(u), 6) for u in template.uv[vertex, 0]],
                dp_V=[round(float(v), 6) for v in template.uv[vertex, 1]],
                dp_vertex=[int(v) for v in vertex],
                ref_model=template.name,
                dp_masks=dp_masks(np.where(mask, part_of_pixel, 0), (x, y, w, h)),
            )
        annotations.append(ann)
    return annotations


def coco_document(images: list[dict], annotations: list[dict], description: str) -> dict:
    """A COCO instances document (images and annotations sorted by id)."""
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "categories": CATEGORIES,
        "images": sorted(images, key=lambda r: r["id"]),
        "annotations": sorted(annotations, key=lambda r: r["id"]),
    }


__all__ = ["CATEGORIES", "COCO_KEYPOINT_NAMES", "annotate_frame", "coco_document", "dp_masks", "encode_rle"]
