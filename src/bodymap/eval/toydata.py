"""Small synthetic evaluation data made from the template alone, for tests, the benchmark and smoke runs.

People are orthographic front or back views of the rest-pose template (ray cast once with `bodymap.raycast`),
scaled with nearest-neighbour resampling and pasted into images (later people occlude earlier ones). From such a
scene come dense GT (the docs/formats.md `gt/<id>.npz` arrays) and DensePose-COCO annotations with sampled points,
`dp_masks` and an RLE segmentation, so the evaluator can be exercised without the render stage. Predictions are
derived from the GT: displaced vertices, lost foreground, jittered boxes, duplicates and false positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from scipy.spatial import cKDTree

from bodymap.eval.predictions import Instances
from bodymap.io import save_npz, write_json
from bodymap.template import BodyTemplate
from bodymap.template.pictures import orthographic_view


@dataclass
class Scene:
    """vertex: [H, W] int32 template vertex per pixel (-1 background); person: [H, W] int16 person index (-1)."""

    vertex: np.ndarray
    person: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.vertex.shape  # type: ignore[return-value]


class ToyPeople:
    """Front / back views of the template, cropped to the body, at any pixel height."""

    def __init__(self, template: BodyTemplate, resolution: int = 256) -> None:
        self.template = template
        self.resolution = resolution

    @cached_property
    def views(self) -> dict[str, np.ndarray]:
        out = {}
        for name, back in (("front", False), ("back", True)):
            vertex, _ = orthographic_view(self.template, self.resolution, back=back)
            ys, xs = np.nonzero(vertex >= 0)
            out[name] = vertex[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        return out

    def person(self, view: str, height: int) -> np.ndarray:
        """[height, w] int32 vertex patch (-1 background) of the body seen from `view` ('front' or 'back')."""
        patch = self.views[view]
        width = max(1, round(patch.shape[1] * height / patch.shape[0]))
        return cv2.resize(patch, (width, height), interpolation=cv2.INTER_NEAREST)

    def scene(self, shape: tuple[int, int], people: list[tuple[str, int, int, int]]) -> Scene:
        """Paste people (view, height, x, y of the patch's top-left corner) in order; parts outside are cut."""
        vertex = np.full(shape, -1, np.int32)
        person = np.full(shape, -1, np.int16)
        for index, (view, height, x, y) in enumerate(people):
            patch = self.person(view, height)
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + patch.shape[0], shape[0]), min(x + patch.shape[1], shape[1])
            if y1 <= y0 or x1 <= x0:
                continue
            cells = patch[y0 - y : y1 - y, x0 - x : x1 - x]
            fg = cells >= 0
            vertex[y0:y1, x0:x1][fg] = cells[fg]
            person[y0:y1, x0:x1][fg] = index
        return Scene(vertex, person)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def annotate(
    scene: Scene,
    template: BodyTemplate,
    *,
    image_id: int,
    first_id: int,
    points: int = 100,
    rng: np.random.Generator,
    min_pixels: int = 1,
) -> list[dict[str, Any]]:
    """DensePose-COCO annotations of a scene's visible people (ids first_id, first_id + 1, ...).

    Points are `points` random foreground pixels of each person at their pixel centres (dp_x = (px + 0.5 - x) * 255
    / w), with dp_vertex, dp_I, dp_U, dp_V from the GT vertex; dp_masks from the coarse parts on the 256 grid.
    """
    anns = []
    for k in np.unique(scene.person[scene.person >= 0]):
        mask = scene.person == k
        ys, xs = np.nonzero(mask)
        if len(xs) < min_pixels:
            continue
        x, y = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) + 1 - x, int(ys.max()) + 1 - y
        pick = rng.choice(len(xs), size=min(points, len(xs)), replace=False)
        px, py = xs[pick], ys[pick]
        v = scene.vertex[py, px]
        crop = np.where(mask[y : y + h, x : x + w], template.part[np.maximum(scene.vertex[y : y + h, x : x + w], 0)], 0)
        grid = cv2.resize(crop.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST)
        dp_masks = [_rle(grid == part) if np.any(grid == part) else [] for part in range(1, 15)]
        anns.append(
            {
                "id": first_id + len(anns),
                "image_id": image_id,
                "category_id": 1,
                "bbox": [x, y, w, h],
                "area": int(mask.sum()),
                "iscrowd": 0,
                "segmentation": _rle(mask),
                "num_keypoints": 0,
                "dp_x": ((px + 0.5 - x) * 255.0 / w).tolist(),
                "dp_y": ((py + 0.5 - y) * 255.0 / h).tolist(),
                "dp_I": template.chart[v].astype(float).tolist(),
                "dp_U": template.uv[v, 0].astype(float).tolist(),
                "dp_V": template.uv[v, 1].astype(float).tolist(),
                "dp_masks": dp_masks,
                "dp_vertex": v.tolist(),
                "ref_model": template.name,
            }
        )
    return anns


def coco_document(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """A DensePose-COCO JSON document (category 1 = person)."""
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }


# ---------------------------------------------------------------------------------------------- predictions
def instance_of(scene: Scene, k: int, pred: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(box [4], grid) of person k of a scene: its tight box and the prediction (default: GT) over it."""
    pred = scene.vertex if pred is None else pred
    ys, xs = np.nonzero(scene.person == k)
    x, y = xs.min(), ys.min()
    w, h = xs.max() + 1 - x, ys.max() + 1 - y
    grid = np.where(scene.person[y : y + h, x : x + w] == k, pred[y : y + h, x : x + w], -1)
    return np.array([x, y, w, h], np.float64), grid.astype(np.int32)


def instances(items: list[tuple[np.ndarray, float, np.ndarray]]) -> Instances:
    """Instances from (box, score, grid) triples."""
    if not items:
        return Instances.empty()
    return Instances(
        np.array([b for b, _, _ in items], np.float64), np.array([s for _, s, _ in items]), tuple(g for *_, g in items)
    )


def neighbour_table(template: BodyTemplate, k: int, seed: int) -> np.ndarray:
    """[V] int32: each vertex -> one of its k nearest vertices (a small, consistent displacement on the body)."""
    rng = np.random.default_rng(seed)
    _, near = cKDTree(template.vertices).query(template.vertices, k=k)
    return near[np.arange(len(near)), rng.integers(0, k, len(near))].astype(np.int32)


def noisy(vertex: np.ndarray, table: np.ndarray, rng: np.random.Generator, drop: float = 0.05) -> np.ndarray:
    """A plausible imperfect prediction: displaced vertices, some foreground lost, some background hallucinated."""
    out = np.where(vertex >= 0, table[np.maximum(vertex, 0)], -1)
    out[rng.random(vertex.shape) < drop] = -1
    shifted = np.roll(out, shift=int(rng.integers(-2, 3)), axis=1)
    return shifted.astype(np.int32)


def random_detections(scene: Scene, pred: np.ndarray, rng: np.random.Generator, false_positives: int = 1) -> Instances:
    """Jittered fractional boxes around each GT person (grid from `pred`), duplicates and false positives."""
    height, width = scene.shape
    items = []
    for k in np.unique(scene.person[scene.person >= 0]):
        box, _ = instance_of(scene, int(k))
        for _ in range(int(rng.integers(1, 3))):
            jitter = box + rng.uniform(-3, 3, 4) * np.array([1, 1, 1, 1])
            jitter[2:] = np.maximum(jitter[2:], 1.0)
            items.append((jitter, float(rng.random()), _grid(pred, jitter, height, width)))
    for _ in range(false_positives):
        x, y = rng.uniform(0, width - 20), rng.uniform(0, height - 20)
        box = np.array([x, y, rng.uniform(5, 60), rng.uniform(5, 90)])
        items.append((box, float(rng.random()) * 0.5, _grid(pred, box, height, width)))
    return instances(items)


def _grid(pred: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    rows, cols = max(int(box[3]), 1), max(int(box[2]), 1)
    ys, xs = int(box[1]) + np.arange(rows), int(box[0]) + np.arange(cols)
    inside = ((ys >= 0) & (ys < height))[:, None] & ((xs >= 0) & (xs < width))[None, :]
    return np.where(inside, pred[np.clip(ys, 0, height - 1)][:, np.clip(xs, 0, width - 1)], -1).astype(np.int32)


def write_split(
    directory: str | Path,
    scenes: list[Scene],
    template: BodyTemplate,
    *,
    points: int = 100,
    seed: int = 0,
    annotations: bool = True,
) -> dict[str, Any]:
    """Write a dense split (gt/<id>.npz, ids 1.., and annotations.json unless told not to); return the COCO doc."""
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id, scene in enumerate(scenes, start=1):
        save_npz(directory / "gt" / f"{image_id:06d}.npz", vertex=scene.vertex, person=scene.person)
        height, width = scene.shape
        images.append({"id": image_id, "file_name": f"images/{image_id:06d}.png", "height": height, "width": width})
        anns += annotate(scene, template, image_id=image_id, first_id=len(anns) + 1, points=points, rng=rng)
    doc = coco_document(images, anns)
    if annotations:
        write_json(directory / "annotations.json", doc, indent=None)
    return doc


def write_video(directory: str | Path, sequences: list[list[Scene]]) -> None:
    """Write dense video GT: gt/<seq>/<frame>.npz (seq 000.., frame 0000..)."""
    directory = Path(directory)
    for s, frames in enumerate(sequences):
        for t, scene in enumerate(frames):
            save_npz(directory / "gt" / f"{s:03d}" / f"{t:04d}.npz", vertex=scene.vertex, person=scene.person)


__all__ = [
    "Scene",
    "ToyPeople",
    "annotate",
    "coco_document",
    "instance_of",
    "instances",
    "neighbour_table",
    "noisy",
    "random_detections",
    "write_split",
    "write_video",
]
