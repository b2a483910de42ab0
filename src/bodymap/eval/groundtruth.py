"""Ground truth for the evaluator: DensePose-COCO JSON (sparse points, masks; read by `bodymap.data.coco`) and
dense per-pixel GT (`gt/*.npz`)."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodymap.data.coco import (
    KAPPA,
    CocoGroundTruth,
    box_mask_on_image,
    dp_masks_to_box_mask,
    encode,
    gt_mask_rle,
    read_coco,
)
from bodymap.errors import BodymapError, input_error
from bodymap.eval.accuracy import VisiblePerson, visible_surface
from bodymap.template import BodyTemplate
from bodymap.template.geodesic import Geodesics

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ dense GT
@dataclass(frozen=True)
class DenseFrame:
    """One dense GT image. vertex: [H, W] int32 (-1 background); person: [H, W] int16 or None (-1 background)."""

    vertex: np.ndarray
    person: np.ndarray | None


class DenseGroundTruth:
    """Per-pixel GT in `<root>/gt/`: `<id>.npz` for a split, `<seq>/<frame>.npz` for video (docs/formats.md).

    keys: sorted relative paths without `.npz`; sequences: for video, sequence -> its frame keys in order.
    """

    def __init__(self, root: Path, keys: list[str], sequences: dict[str, list[str]], num_vertices: int) -> None:
        self.root = root
        self.keys = keys
        self.sequences = sequences
        self.num_vertices = num_vertices
        self._visible: dict[str, list[VisiblePerson]] = {}

    @classmethod
    def open(cls, root: str | Path, *, video: bool, num_vertices: int) -> DenseGroundTruth:
        root = Path(root)
        gt = root / "gt"
        if not gt.is_dir():
            raise BodymapError(f"{root}: no gt/ directory of dense ground truth here")
        pattern = "*/*.npz" if video else "*.npz"
        keys = sorted(p.relative_to(gt).with_suffix("").as_posix() for p in gt.glob(pattern))
        if not keys:
            layout = "gt/<seq>/<frame>.npz" if video else "gt/<id>.npz"
            raise BodymapError(f"{gt}: no dense ground truth files ({layout})")
        sequences: dict[str, list[str]] = {}
        if video:
            for key in keys:
                sequences.setdefault(key.split("/")[0], []).append(key)
        return cls(root, keys, sequences, num_vertices)

    def path(self, key: str) -> Path:
        return self.root / "gt" / f"{key}.npz"

    def load(self, key: str) -> DenseFrame:
        path = self.path(key)
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files if k in ("vertex", "person")}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise input_error(path, None, None, f"cannot read ({exc})") from None
        if "vertex" not in arrays:
            raise input_error(path, None, "vertex", "missing")
        vertex, person = arrays["vertex"], arrays.get("person")
        if vertex.ndim != 2 or not np.issubdtype(vertex.dtype, np.integer):
            raise input_error(path, None, "vertex", f"expected [H, W] integers, got {vertex.dtype}{list(vertex.shape)}")
        if vertex.size and (vertex.min() < -1 or vertex.max() >= self.num_vertices):
            raise input_error(path, None, "vertex", f"expected -1 or vertex ids in [0, {self.num_vertices})")
        if person is not None and (person.shape != vertex.shape or not np.issubdtype(person.dtype, np.integer)):
            raise input_error(path, None, "person", f"expected integers of shape {list(vertex.shape)}")
        return DenseFrame(vertex.astype(np.int32, copy=False), person)

    def visible(self, key: str, geodesics: Geodesics, min_spacing_m: float) -> list[VisiblePerson]:
        """`accuracy.visible_surface` of one GT image, computed once and kept: every prediction set scored against
        this ground truth reuses it."""
        if key not in self._visible:
            frame = self.load(key)
            self._visible[key] = visible_surface(frame.vertex, frame.person, geodesics, min_spacing_m)
        return self._visible[key]


# --------------------------------------------------------------------------------------------------- GT sources
GT_KINDS = ("coco", "dense", "video")


@dataclass
class GroundTruth:
    """What one evaluation set is scored against.

    kind 'coco': a DensePose-COCO JSON (AP + point metrics on its sparse points); images under `images_dir`.
    kind 'dense': a split directory with gt/<id>.npz (point metrics on every pixel) and, when present,
    annotations.json (AP). kind 'video': like dense with gt/<seq>/<frame>.npz, plus temporal consistency.
    """

    kind: str
    source: Path
    coco: CocoGroundTruth | None
    dense: DenseGroundTruth | None
    images_dir: Path | None

    def image_file(self, *, image_index: int | None = None, key: str | None = None) -> Path | None:
        """The RGB image of a COCO image index or a dense key, if it exists (only visualisations need it)."""
        if self.images_dir is None:
            return None
        if image_index is not None and self.coco is not None and self.coco.file_names[image_index]:
            path = self.images_dir / self.coco.file_names[image_index]
        elif key is not None:
            path = next((p for p in sorted(self.images_dir.glob(f"images/{key}.*"))), self.images_dir / "missing")
        else:
            return None
        return path if path.is_file() else None


def load_ground_truth(
    kind: str, source: str | Path, *, template: BodyTemplate, images_dir: str | Path | None = None
) -> GroundTruth:
    """Open a GT source of `kind` (see `GroundTruth`); COCO JSON is read and checked now, dense frames lazily."""
    source = Path(source)
    if kind not in GT_KINDS:
        raise BodymapError(f"{source}: unknown ground-truth kind {kind!r}; expected one of {', '.join(GT_KINDS)}")
    if kind == "coco":
        if not source.is_file():
            raise BodymapError(f"{source}: no such DensePose-COCO annotation file")
        coco = read_coco(source, template)
        return GroundTruth(kind, source, coco, None, Path(images_dir) if images_dir else source.parent)
    if not source.is_dir():
        raise BodymapError(f"{source}: expected a {kind} ground-truth directory (with gt/)")
    dense = DenseGroundTruth.open(source, video=kind == "video", num_vertices=template.num_vertices)
    annotations = source / "annotations.json"
    coco = read_coco(annotations, template) if annotations.is_file() else None
    return GroundTruth(kind, source, coco, dense, Path(images_dir) if images_dir else source)


__all__ = [
    "GT_KINDS",
    "KAPPA",
    "CocoGroundTruth",
    "DenseFrame",
    "DenseGroundTruth",
    "GroundTruth",
    "box_mask_on_image",
    "dp_masks_to_box_mask",
    "encode",
    "gt_mask_rle",
    "load_ground_truth",
    "read_coco",
]
