"""Helpers for the evaluator tests: toy scenes from the template and predictions derived from their GT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bodymap.eval import PredictionWriter, read_coco
from bodymap.eval.groundtruth import CocoGroundTruth
from bodymap.eval.toydata import Scene, ToyPeople, instance_of, instances, neighbour_table, noisy, random_detections
from bodymap.io import write_json
from bodymap.template import BodyTemplate

# re-exported for the tests: the library's toy-data builders
__all__ = ["instance_of", "instances", "load", "neighbour_table", "noisy", "random_detections", "random_scenes"]


def load(tmp: Path, template: BodyTemplate, doc: dict[str, Any], name: str = "annotations.json") -> CocoGroundTruth:
    path = tmp / name
    write_json(path, doc, indent=None)
    return read_coco(path, template)


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


def write_dense_predictions(directory: Path, template: BodyTemplate, maps: list[np.ndarray], persons=None) -> Path:
    writer = PredictionWriter(directory, template_name=template.name, kind="dense")
    for image_id, vertex in enumerate(maps, start=1):
        person = persons[image_id - 1] if persons is not None else None
        writer.add_dense(image_id, vertex, person=person, score=np.ones(vertex.shape) * 0.9)
    writer.close()
    return directory
