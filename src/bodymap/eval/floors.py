"""Trivial predictors: the floor every reported figure is read against.

Each keeps a real model's silhouette (its `vertex >= 0` and its `score`), so detection-style figures that only see
the silhouette (mask IoU AP) equal the model's, while every figure that depends on the correspondences should fall
to about nothing:

- `constant`: every foreground pixel predicts one vertex, the torso centre (`torso_centre_vertex`);
- `random`: every foreground pixel predicts a vertex drawn uniformly from the template, seeded per image.

A metric on which these do not score near zero measures something other than correspondence quality.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bodymap.eval.predictions import PredictionSet, PredictionWriter
from bodymap.io import atomic_dir
from bodymap.template import BodyTemplate

FLOORS = ("constant", "random")


def torso_centre_vertex(template: BodyTemplate) -> int:
    """The torso vertex nearest the torso's centroid."""
    torso = np.flatnonzero(np.isin(template.chart, (1, 2)))
    centre = template.vertices[torso].mean(axis=0)
    return int(torso[np.argmin(np.linalg.norm(template.vertices[torso] - centre, axis=1))])


def floor_vertices(kind: str, foreground: np.ndarray, template: BodyTemplate, key: str, seed: int = 0) -> np.ndarray:
    """The trivial prediction `kind` ('constant' or 'random') on a foreground mask [H, W] bool: [H, W] int32 vertex
    ids, -1 background. `random` is seeded by (seed, key), so a set's floor is the same run to run."""
    if kind == "constant":
        return np.where(foreground, torso_centre_vertex(template), -1).astype(np.int32)
    if kind == "random":
        stream = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
        rng = np.random.default_rng([seed, stream])
        return np.where(foreground, rng.integers(0, template.num_vertices, foreground.shape), -1).astype(np.int32)
    raise ValueError(f"unknown floor {kind!r}; expected one of {', '.join(FLOORS)}")


def write_floor_predictions(
    source: str | Path, out: str | Path, kind: str, template: BodyTemplate, *, seed: int = 0
) -> Path:
    """A dense prediction set in `out` (atomically): the trivial predictor `kind` on the silhouettes of the dense
    prediction set `source`, image for image (same ids, keys and score maps)."""
    predictions = PredictionSet.open(source, num_vertices=template.num_vertices, template_name=template.name)
    if predictions.kind != "dense":
        raise ValueError(f"{source}: floors are drawn on dense predictions, got kind {predictions.kind!r}")
    with atomic_dir(out) as tmp:
        writer = PredictionWriter(tmp, template_name=template.name, kind="dense")
        for entry in predictions.entries:
            vertex, person, score = predictions.dense(entry)
            fixed = floor_vertices(kind, vertex >= 0, template, entry.key, seed)
            writer.add_dense(entry.image_id, fixed, person=person, score=score, name=entry.key)
        writer.close()
    return Path(out)


__all__ = ["FLOORS", "floor_vertices", "torso_centre_vertex", "write_floor_predictions"]
