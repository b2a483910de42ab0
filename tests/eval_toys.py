"""Helpers for the evaluator tests: toy scenes from the template and predictions derived from their GT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from bodymap.eval import Instances, PredictionWriter, read_coco
from bodymap.eval.groundtruth import CocoGroundTruth
from bodymap.eval.toydata import Scene, ToyPeople, annotate, coco_document
from bodymap.io import write_json
from bodymap.template import BodyTemplate


def coco_from_scenes(
    tmp: Path, template: BodyTemplate, scenes: list[Scene], points: int = 60, seed: int = 0
) -> tuple[Path, dict[str, Any]]:
    """Write annotations.json for scenes (image ids 1..) and return (path, document)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id, scene in enumerate(scenes, start=1):
        images.append({"id": image_id, "file_name": f"images/{image_id:06d}.png", "height": scene.shape[0],
                       "width": scene.shape[1]})  # fmt: skip
        anns += annotate(scene, template, image_id=image_id, first_id=len(anns) + 1, points=points, rng=rng)
    doc = coco_document(images, anns)
    path = tmp / "annotations.json"
    write_json(path, doc, indent=None)
    return path, doc


def load(tmp: Path, template: BodyTemplate, doc: dict[str, Any], name: str = "annotations.json") -> CocoGroundTruth:
    path = tmp / name
    write_json(path, doc, indent=None)
    return read_coco(path, template)


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


def random_scenes(people: ToyPeople, n: int, rng: np.random.Generator, shape=(160, 200)) -> list[Scene]:
    scenes = []
    for _ in range(n):
        crowd = [
            (str(rng.choice(["front", "back"])), int(rng.integers(24, 150)), int(rng.integers(-20, 170)),
             int(rng.integers(-10, 60)))
            for _ in range(int(rng.integers(1, 4)))
        ]  # fmt: skip
        scenes.append(people.scene(shape, crowd))
    return scenes


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


def write_dense_predictions(directory: Path, template: BodyTemplate, maps: list[np.ndarray], persons=None) -> Path:
    writer = PredictionWriter(directory, template_name=template.name, kind="dense")
    for image_id, vertex in enumerate(maps, start=1):
        person = persons[image_id - 1] if persons is not None else None
        writer.add_dense(image_id, vertex, person=person, score=np.ones(vertex.shape) * 0.9)
    writer.close()
    return directory
