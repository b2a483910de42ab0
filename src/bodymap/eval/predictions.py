"""The prediction format `bodymap evaluate` reads (docs/formats.md, "Predictions"), its writer, and instances.

A prediction set is a directory with `predictions.json` and one `.npz` per image. Two kinds:

- `dense` (whole-image models: BodyMap, CSE): `vertex [H, W] int32` (-1 background), optional `person [H, W]`
  (instance ids, -1 background) and `score [H, W]` (foreground probability). For AP the foreground is split into
  instances by `person`, or by 8-connected components when there is none; an instance's box is the tight box of its
  pixels (integer, so detectron2's box grid is exactly those pixels), its score the mean `score` over its pixels
  (1.0 without a score map), and instances under `min_instance_pixels` are dropped as specks.
- `instances` (detector-style models): `boxes [N, 4]` (x, y, w, h), `scores [N]`, and `vertex_<k>` for instance k,
  the vertex map over its box on detectron2's box grid: `[max(int(h), 1), max(int(w), 1)] int32`, -1 background.
  Row i, column j covers the image pixel whose offset from the box corner truncates to (i, j).

Vertex ids index the template's vertices; `template` in the index must name the template the evaluator uses.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from bodymap.errors import input_error
from bodymap.io import read_json, save_npz, write_json

log = logging.getLogger(__name__)

INDEX = "predictions.json"
KINDS = ("dense", "instances")


def box_grid_shape(w: float, h: float) -> tuple[int, int]:
    """(rows, cols) of detectron2's grid over a box of size w x h: (max(int(h), 1), max(int(w), 1))."""
    return max(int(h), 1), max(int(w), 1)


@dataclass(frozen=True)
class Instances:
    """Detections of one image, in stored order (the evaluator sorts by score, stably).

    Attributes:
        boxes: [N, 4] float64 (x, y, w, h) in pixels.
        scores: [N] float64.
        maps: N arrays [max(int(h), 1), max(int(w), 1)] int32: vertex id per box-grid cell, -1 background.
    """

    boxes: np.ndarray
    scores: np.ndarray
    maps: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Instances:
        return cls(np.zeros((0, 4)), np.zeros(0), ())

    def ranked(self, max_detections: int) -> Instances:
        """The `max_detections` highest-scoring instances, highest first (ties keep stored order, as detectron2)."""
        order = np.argsort(-self.scores, kind="mergesort")[:max_detections]
        return Instances(self.boxes[order], self.scores[order], tuple(self.maps[i] for i in order))


def dense_to_instances(
    vertex: np.ndarray, person: np.ndarray | None = None, score: np.ndarray | None = None, *, min_pixels: int = 0
) -> Instances:
    """Split a whole-image prediction into instances (boxes, scores, box-grid vertex maps).

    Args:
        vertex: [H, W] int vertex ids, -1 background.
        person: [H, W] int instance ids (-1 background) or None for 8-connected components of the foreground.
        score: [H, W] float foreground probability or None (every instance scores 1.0).
        min_pixels: instances with fewer foreground pixels are dropped.
    Returns:
        Instances ordered by person id (or component label).
    """
    fg = vertex >= 0
    if person is not None:
        labels = np.where(fg & (person >= 0), person.astype(np.int64) + 1, 0)
    else:
        labels, _ = ndimage.label(fg, structure=np.ones((3, 3), bool))
    counts = np.bincount(labels.ravel())
    sums = np.bincount(labels.ravel(), weights=score.ravel().astype(np.float64)) if score is not None else None
    boxes, scores, maps = [], [], []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or counts[index] < max(min_pixels, 1):
            continue
        own = labels[sl] == index
        maps.append(np.where(own, vertex[sl], -1).astype(np.int32))
        ys, xs = sl
        boxes.append((xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start))
        scores.append(sums[index] / counts[index] if sums is not None else 1.0)
    if not boxes:
        return Instances.empty()
    return Instances(np.asarray(boxes, np.float64), np.asarray(scores, np.float64), tuple(maps))


def paste_instances(instances: Instances, shape: tuple[int, int], *, scores: bool = False) -> np.ndarray:
    """One image-level vertex map from instances: each foreground cell at (int(y) + i, int(x) + j), the
    higher-ranked instance winning where they overlap. Returns [H, W] int32, -1 where nothing was predicted, or with
    `scores` the winning instance's score there ([H, W] float32, 0 where nothing was predicted)."""
    height, width = shape
    out = np.zeros(shape, np.float32) if scores else np.full(shape, -1, np.int32)
    ranked = instances.ranked(len(instances))
    for k in range(len(ranked) - 1, -1, -1):  # lowest first, so the best is painted last
        x, y = int(ranked.boxes[k, 0]), int(ranked.boxes[k, 1])
        grid = ranked.maps[k]
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + grid.shape[0], height), min(x + grid.shape[1], width)
        if y1 <= y0 or x1 <= x0:
            continue
        cells = grid[y0 - y : y1 - y, x0 - x : x1 - x]
        region = out[y0:y1, x0:x1]
        region[cells >= 0] = ranked.scores[k] if scores else cells[cells >= 0]
    return out


# ------------------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class PredictionEntry:
    """One image of a prediction set: its COCO image id, its file and the file's key (relative path, no suffix)."""

    image_id: int
    file: Path
    key: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PredictionSet:
    """A prediction directory, validated on open; per-image arrays are read and checked on demand."""

    def __init__(self, directory: Path, kind: str, template_name: str, entries: list[PredictionEntry], vertices: int):
        self.directory = directory
        self.kind = kind
        self.template_name = template_name
        self.entries = entries
        self.num_vertices = vertices
        self.by_id = {e.image_id: e for e in entries}
        self.by_key = {e.key: e for e in entries}

    @classmethod
    def open(cls, directory: str | Path, *, num_vertices: int, template_name: str | None = None) -> PredictionSet:
        """Read and check `predictions.json`; `template_name`, when given, must match the index's `template`."""
        directory = Path(directory)
        path = directory / INDEX
        data = read_json(path, "the prediction index")
        if not isinstance(data, dict):
            raise input_error(path, None, None, "expected a JSON object with template, kind and images")
        for field in ("template", "kind", "images"):
            if field not in data:
                raise input_error(path, None, field, "missing")
        kind = data["kind"]
        if kind not in KINDS:
            raise input_error(path, None, "kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        if template_name is not None and data["template"] != template_name:
            raise input_error(
                path,
                None,
                "template",
                f"predictions are for template {data['template']!r}, evaluating with "
                f"{template_name!r}; vertex ids of different templates do not correspond",
            )
        if not isinstance(data["images"], list):
            raise input_error(path, None, "images", "expected a list of {image_id, file}")
        entries: list[PredictionEntry] = []
        seen: dict[int, int] = {}
        for index, item in enumerate(data["images"]):
            record = f"images[{index}]"
            if not isinstance(item, dict):
                raise input_error(path, record, None, "expected an object {image_id, file}")
            for field in ("image_id", "file"):
                if field not in item:
                    raise input_error(path, record, field, "missing")
            image_id, file = item["image_id"], item["file"]
            if not _is_int(image_id):
                raise input_error(path, record, "image_id", f"expected an int, got {image_id!r}")
            if image_id in seen:
                raise input_error(path, record, "image_id", f"{image_id} repeats images[{seen[image_id]}]")
            if not isinstance(file, str) or not file.endswith(".npz") or Path(file).is_absolute() or ".." in file:
                raise input_error(path, record, "file", f"expected a relative path to an .npz file, got {file!r}")
            if not (directory / file).is_file():
                raise input_error(path, record, "file", f"{directory / file} does not exist")
            seen[image_id] = index
            entries.append(PredictionEntry(image_id, directory / file, Path(file).with_suffix("").as_posix()))
        return cls(directory, kind, str(data["template"]), entries, num_vertices)

    def _load(self, entry: PredictionEntry) -> dict[str, np.ndarray]:
        try:
            with np.load(entry.file) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise input_error(entry.file, f"image_id {entry.image_id}", None, f"cannot read ({exc})") from None

    def _vertex_array(self, entry: PredictionEntry, arrays: dict[str, np.ndarray], field: str) -> np.ndarray:
        if field not in arrays:
            raise input_error(entry.file, f"image_id {entry.image_id}", field, "missing")
        value = arrays[field]
        if value.ndim != 2 or not np.issubdtype(value.dtype, np.integer):
            raise input_error(
                entry.file,
                f"image_id {entry.image_id}",
                field,
                f"expected a 2-D integer array of vertex ids, got {value.dtype}{list(value.shape)}",
            )
        if value.size and (value.min() < -1 or value.max() >= self.num_vertices):
            raise input_error(
                entry.file,
                f"image_id {entry.image_id}",
                field,
                f"vertex ids must be -1 or in [0, {self.num_vertices}), got {value.min()}..{value.max()}",
            )
        return value.astype(np.int32, copy=False)

    def dense(
        self, entry: PredictionEntry, shape: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(vertex [H, W] int32, person [H, W] or None, score [H, W] float32 or None) of a dense prediction."""
        arrays = self._load(entry)
        record = f"image_id {entry.image_id}"
        vertex = self._vertex_array(entry, arrays, "vertex")
        if shape is not None and vertex.shape != tuple(shape):
            raise input_error(
                entry.file,
                record,
                "vertex",
                f"expected the image's shape [H, W] = {list(shape)}, got {list(vertex.shape)}",
            )
        extra = []
        for field, kind in (("person", np.integer), ("score", np.floating)):
            value = arrays.get(field)
            if value is not None and (value.shape != vertex.shape or not np.issubdtype(value.dtype, kind)):
                raise input_error(
                    entry.file,
                    record,
                    field,
                    f"expected {kind.__name__} [H, W] = {list(vertex.shape)}, got {value.dtype}{list(value.shape)}",
                )
            extra.append(value)
        person, score = extra
        return vertex, person, (score.astype(np.float32) if score is not None else None)

    def instances(
        self, entry: PredictionEntry, *, shape: tuple[int, int] | None = None, min_pixels: int = 0
    ) -> Instances:
        """The detections of one image (dense predictions are split as described in the module docstring)."""
        if self.kind == "dense":
            vertex, person, score = self.dense(entry, shape)
            return dense_to_instances(vertex, person, score, min_pixels=min_pixels)
        arrays = self._load(entry)
        record = f"image_id {entry.image_id}"
        for field in ("boxes", "scores"):
            if field not in arrays:
                raise input_error(entry.file, record, field, "missing")
        boxes, scores = arrays["boxes"], arrays["scores"]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
            raise input_error(
                entry.file, record, "boxes", f"expected [N, 4] numbers, got {boxes.dtype}{list(boxes.shape)}"
            )
        n = len(boxes)
        if scores.shape != (n,) or not np.issubdtype(scores.dtype, np.number):
            raise input_error(
                entry.file, record, "scores", f"expected [{n}] numbers, got {scores.dtype}{list(scores.shape)}"
            )
        boxes, scores = boxes.astype(np.float64), scores.astype(np.float64)
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()) or (n and boxes[:, 2:].min() < 0):
            raise input_error(entry.file, record, "boxes", "expected finite boxes with w, h >= 0 and finite scores")
        maps = []
        for k in range(n):
            grid = self._vertex_array(entry, arrays, f"vertex_{k}")
            expected = box_grid_shape(boxes[k, 2], boxes[k, 3])
            if grid.shape != expected:
                raise input_error(
                    entry.file,
                    record,
                    f"vertex_{k}",
                    f"expected the box grid [max(int(h),1), max(int(w),1)] = {list(expected)} of box "
                    f"{boxes[k].tolist()}, got {list(grid.shape)}",
                )
            maps.append(grid)
        return Instances(boxes, scores, tuple(maps))

    def read(
        self, entry: PredictionEntry | None, shape: tuple[int, int], *, max_detections: int, min_pixels: int
    ) -> ImageView:
        """Every view of one image from one read (see `ImageView`). A missing entry (None) predicts nothing."""
        if entry is None:
            return ImageView(Instances.empty(), np.full(shape, -1, np.int32), np.zeros(shape, np.float32))
        if self.kind == "dense":
            vertex, person, score = self.dense(entry, shape)
            ranked = dense_to_instances(vertex, person, score, min_pixels=min_pixels).ranked(max_detections)
            score_map = score if score is not None else (vertex >= 0).astype(np.float32)
            return ImageView(ranked, vertex, np.where(vertex >= 0, score_map, 0.0).astype(np.float32))
        ranked = self.instances(entry).ranked(max_detections)
        return ImageView(ranked, paste_instances(ranked, shape), paste_instances(ranked, shape, scores=True))


@dataclass(frozen=True)
class ImageView:
    """One image's prediction as the evaluator reads it.

    Attributes:
        ranked: the detections for AP, at most `max_detections`, best first.
        vertex: [H, W] int32 image-level vertex map the point metrics read (a dense `vertex` as stored, or the
            detections pasted by `paste_instances`).
        score: [H, W] float32 foreground score under `vertex` (the dense `score`, 1 without one, or the pasted
            detection's score), 0 on background.
    """

    ranked: Instances
    vertex: np.ndarray
    score: np.ndarray


def crop_box(image: np.ndarray, box: np.ndarray, fill: float = -1) -> np.ndarray:
    """An image-level map [H, W] on detectron2's grid of box (x, y, w, h): cell (i, j) is pixel (int(y) + i,
    int(x) + j), `fill` outside the image. Returns [max(int(h), 1), max(int(w), 1)] of the image's dtype."""
    rows, cols = box_grid_shape(box[2], box[3])
    ys, xs = int(box[1]) + np.arange(rows), int(box[0]) + np.arange(cols)
    height, width = image.shape
    inside = ((ys >= 0) & (ys < height))[:, None] & ((xs >= 0) & (xs < width))[None, :]
    cells = image[np.clip(ys, 0, height - 1)][:, np.clip(xs, 0, width - 1)]
    return np.where(inside, cells, fill).astype(image.dtype)


# ------------------------------------------------------------------------------------------------------- writing
class PredictionWriter:
    """Write a prediction set: `add_dense` / `add_instances` per image, then `close()` writes the index.

    Files are written atomically; write into a directory from `bodymap.io.atomic_dir` for an all-or-nothing set.
    """

    def __init__(self, directory: str | Path, *, template_name: str, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.directory = Path(directory)
        self.template_name = template_name
        self.kind = kind
        self.images: list[dict[str, object]] = []

    def _file(self, image_id: int, name: str | None) -> str:
        return f"{name if name is not None else f'{image_id:06d}'}.npz"

    def add_dense(
        self,
        image_id: int,
        vertex: np.ndarray,
        *,
        person: np.ndarray | None = None,
        score: np.ndarray | None = None,
        name: str | None = None,
    ) -> None:
        """vertex: [H, W] int (-1 background); person: [H, W] int or None; score: [H, W] float or None.
        `name` is the file's relative path without `.npz` (default: the zero-padded image id)."""
        if self.kind != "dense":
            raise ValueError("add_dense on an instances writer")
        arrays = {"vertex": np.asarray(vertex, np.int32)}
        if person is not None:
            arrays["person"] = np.asarray(person, np.int16)
        if score is not None:
            arrays["score"] = np.asarray(score, np.float16)
        file = self._file(image_id, name)
        save_npz(self.directory / file, **arrays)
        self.images.append({"image_id": int(image_id), "file": file})

    def add_instances(
        self, image_id: int, boxes: np.ndarray, scores: np.ndarray, maps: list[np.ndarray], *, name: str | None = None
    ) -> None:
        """boxes: [N, 4] (x, y, w, h); scores: [N]; maps: N box-grid vertex maps (see `box_grid_shape`)."""
        if self.kind != "instances":
            raise ValueError("add_instances on a dense writer")
        arrays = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "scores": np.asarray(scores, np.float64)}
        for k, grid in enumerate(maps):
            arrays[f"vertex_{k}"] = np.asarray(grid, np.int32)
        file = self._file(image_id, name)
        save_npz(self.directory / file, **arrays)
        self.images.append({"image_id": int(image_id), "file": file})

    def close(self) -> Path:
        path = self.directory / INDEX
        write_json(path, {"template": self.template_name, "kind": self.kind, "images": self.images})
        return path


__all__ = [
    "INDEX",
    "KINDS",
    "ImageView",
    "Instances",
    "PredictionEntry",
    "PredictionSet",
    "PredictionWriter",
    "box_grid_shape",
    "crop_box",
    "dense_to_instances",
    "paste_instances",
]
