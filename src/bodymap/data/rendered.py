"""Rendered splits with dense ground truth (docs/formats.md) as training examples.

`DenseDataset` serves the training loop (`sample(index, rng)`); every example carries the image, the GT vertex
map, the foreground mask, a per-pixel weight and, when a CSE directory is given, the CSE estimate that BodyMap
refines, rendered in the template colour code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bodymap.config import AugmentParams
from bodymap.data.augment import NO_AUGMENT, augment, letterbox
from bodymap.errors import BodymapError
from bodymap.io import read_cse, read_image
from bodymap.models.inputs import WITHHELD_CSE, cse_input


def gt_ids(gt_dir: str | Path) -> list[str]:
    """Sorted example ids of a GT directory (the stems of `*.npz`, including `<seq>/<frame>` for video)."""
    gt = Path(gt_dir)
    if not gt.is_dir():
        raise BodymapError(f"{gt}: no ground-truth directory here; run the stage that writes it first")
    ids = sorted(str(p.relative_to(gt).with_suffix("")) for p in gt.rglob("*.npz"))
    if not ids:
        raise BodymapError(f"{gt}: no ground-truth files")
    return ids


def image_path(images_dir: Path, example_id: str) -> Path:
    """The image of an example: PNG for rendered splits, JPEG for the coco-like split and real photos."""
    for suffix in (".png", ".jpg", ".jpeg"):
        path = images_dir / f"{example_id}{suffix}"
        if path.exists():
            return path
    raise BodymapError(f"{images_dir}: no image for example '{example_id}' (.png, .jpg or .jpeg)")


def load_gt(path: Path) -> dict[str, np.ndarray]:
    """Dense GT npz with its fields checked: vertex [H,W] int32 and friends."""
    try:
        with np.load(path) as data:
            gt = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BodymapError(f"{path}: cannot read ground truth ({exc})") from None
    if "vertex" not in gt or gt["vertex"].ndim != 2:
        raise BodymapError(f"{path}: field 'vertex': expected an [H, W] int array")
    return gt


@dataclass(frozen=True)
class Source:
    """Where one set's examples live: images (`<id>.png|jpg`), GT maps (`<id>.npz`) and optional CSE outputs.
    `limit`: use at most the first `limit` examples (sorted ids); None: all."""

    images: Path
    gt: Path
    cse: Path | None = None
    limit: int | None = None

    @classmethod
    def rendered(cls, split_dir: Path, cse_dir: Path | None = None, limit: int | None = None) -> Source:
        """A rendered split (images/, gt/)."""
        return cls(Path(split_dir) / "images", Path(split_dir) / "gt", cse_dir, limit)

    def ids(self) -> list[str]:
        """The example ids this source contributes."""
        return gt_ids(self.gt)[: self.limit]


class DenseDataset:
    """Examples from one or more sources of per-pixel GT, optionally with CSE estimates.

    GT files hold `vertex [H,W]` (-1 background or unlabelled) and optionally `mask [H,W]` (the person silhouette,
    when labels are sparse) and `weight [H,W]` (per-pixel confidence of pseudo-GT).

    Args:
        sources: where images, GT and CSE outputs are (`Source.rendered(split_dir)` for rendered splits).
        symmetry: [V] int32 template mirror map (for flips); colors: [V, 3] uint8 template colour code;
        charts: [V] uint8 template DensePose chart per vertex (per-pixel chart of the GT).
        cse_dirs: matching CSE output directories, or None when the model does not take CSE input.
        augment_config: augmentations applied in `sample` (an `augment` params section; None: none).
        size: examples of another size (real photos) are scaled so the long side is `size` and padded to a square
            (labels with nearest-neighbour sampling), so they batch with the rest; None keeps every size.
    """

    def __init__(
        self,
        sources: list[Source],
        symmetry: np.ndarray,
        colors: np.ndarray,
        charts: np.ndarray,
        augment_config: AugmentParams | None = None,
        size: int | None = None,
    ) -> None:
        self.size = size
        self.items: list[tuple[Source, str]] = []
        for source in sources:
            self.items += [(source, example_id) for example_id in source.ids()]
        self.symmetry, self.charts = symmetry, charts
        self.colors = torch.as_tensor(np.asarray(colors, np.int64))
        self.augment_config = augment_config or NO_AUGMENT

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int) -> dict[str, np.ndarray]:
        """The raw example as numpy arrays (see `bodymap.data.augment` for keys)."""
        source, example_id = self.items[index]
        gt = load_gt(source.gt / f"{example_id}.npz")
        vertex = gt["vertex"].astype(np.int32)
        example = {
            "image": read_image(image_path(source.images, example_id)),
            "vertex": vertex,
            "mask": gt["mask"].astype(np.float32) if "mask" in gt else (vertex >= 0).astype(np.float32),
            "weight": gt["weight"].astype(np.float32) if "weight" in gt else np.ones(vertex.shape, np.float32),
            # Where the silhouette is known: everywhere unless the labels exclude regions (crowds, unlabelled people).
            "mask_weight": (
                gt["mask_weight"].astype(np.float32) if "mask_weight" in gt else np.ones(vertex.shape, np.float32)
            ),
        }
        if source.cse is not None:
            example["cse_vertex"], example["cse_score"] = read_cse(source.cse / f"{example_id}.npz")
        return example

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One augmented training example as tensors.

        Returns:
            image [3,H,W] float32 in [0,1]; vertex [H,W] int64 (-1 bg); chart [H,W] int64 (0 bg);
            mask, weight (correspondence confidence), mask_weight (silhouette supervision) [H,W] float32;
            cse [4,H,W] float32 when CSE inputs are configured.
        """
        example = self.example(index)
        if self.size is not None and example["image"].shape[:2] != (self.size, self.size):
            example = letterbox(example, self.size)
        example = augment(example, self.augment_config, self.symmetry, rng)
        out = {
            "image": torch.from_numpy(example["image"].transpose(2, 0, 1).astype(np.float32) / 255.0),
            "vertex": torch.from_numpy(example["vertex"].astype(np.int64)),
            "chart": torch.from_numpy(
                np.where(example["vertex"] >= 0, self.charts[example["vertex"]], 0).astype(np.int64)
            ),
            "mask": torch.from_numpy(example["mask"].astype(np.float32)),
            "weight": torch.from_numpy(example["weight"].astype(np.float32)),
            "mask_weight": torch.from_numpy(example["mask_weight"].astype(np.float32)),
        }
        if "cse_vertex" in example:
            vertex, score = torch.from_numpy(example["cse_vertex"]), torch.from_numpy(example["cse_score"])
            out["cse"] = cse_input(vertex, score, self.colors)
            if self.augment_config.cse_dropout and rng.random() < self.augment_config.cse_dropout:
                out["cse"].fill_(WITHHELD_CSE)
        return out
