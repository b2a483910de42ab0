"""Rendered splits with dense ground truth (docs/formats.md) as training examples.

`DenseDataset` serves the training loop (`sample(index, rng)`); every example carries the image, the GT vertex
map, the foreground mask, a per-pixel weight and, when a CSE directory is given, the CSE estimate that BodyMap
refines, rendered in the template colour code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bodymap.data.augment import AugmentConfig, augment
from bodymap.errors import BodymapError
from bodymap.io import read_image


def split_ids(split_dir: str | Path) -> list[str]:
    """Sorted example ids of a rendered split (the stems of `gt/*.npz`, including `<seq>/<frame>` for video)."""
    gt = Path(split_dir) / "gt"
    if not gt.is_dir():
        raise BodymapError(f"{split_dir}: not a rendered split (no gt/ directory); run `bodymap render` first")
    ids = sorted(str(p.relative_to(gt).with_suffix("")) for p in gt.rglob("*.npz"))
    if not ids:
        raise BodymapError(f"{gt}: no ground-truth files")
    return ids


def image_path(split_dir: Path, example_id: str) -> Path:
    """The image of an example: PNG for rendered splits, JPEG for the coco-like split."""
    for suffix in (".png", ".jpg"):
        path = split_dir / "images" / f"{example_id}{suffix}"
        if path.exists():
            return path
    raise BodymapError(f"{split_dir / 'images'}: no image for example '{example_id}' (.png or .jpg)")


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


def load_cse(path: Path) -> dict[str, np.ndarray]:
    """A CSE output npz (docs/formats.md): vertex [H,W] int32, score [H,W] float16."""
    try:
        with np.load(path) as data:
            return {"cse_vertex": data["vertex"].astype(np.int32), "cse_score": data["score"].astype(np.float32)}
    except (OSError, ValueError, KeyError) as exc:
        raise BodymapError(f"{path}: not a CSE output with 'vertex' and 'score' ({exc})") from None


def cse_input(cse_vertex: np.ndarray, cse_score: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """BodyMap's correspondence input: the CSE vertex map in the colour code / 255, plus the foreground probability.

    Args:
        cse_vertex: [H, W] int (-1 background); cse_score: [H, W] float; colors: [V, 3] uint8 template colours.
    Returns:
        [4, H, W] float32.
    """
    rgb = colors[np.maximum(cse_vertex, 0)].astype(np.float32) / 255.0
    rgb[cse_vertex < 0] = 0.0
    return np.concatenate([rgb.transpose(2, 0, 1), cse_score[None].astype(np.float32)], axis=0)


class DenseDataset:
    """Examples from one or more rendered splits (dense GT), optionally with CSE estimates.

    Args:
        split_dirs: rendered split directories (images/, gt/).
        symmetry: [V] int32 template mirror map (for flips); colors: [V, 3] uint8 template colour code;
        charts: [V] uint8 template DensePose chart per vertex (per-pixel chart of the GT).
        cse_dirs: matching CSE output directories, or None when the model does not take CSE input.
        augment_config: augmentations applied in `sample`.
    """

    def __init__(
        self,
        split_dirs: list[Path],
        symmetry: np.ndarray,
        colors: np.ndarray,
        charts: np.ndarray,
        cse_dirs: list[Path] | None = None,
        augment_config: AugmentConfig | None = None,
    ) -> None:
        if cse_dirs is not None and len(cse_dirs) != len(split_dirs):
            raise ValueError("one CSE directory per split directory")
        self.items: list[tuple[Path, Path | None, str]] = []
        for k, split in enumerate(split_dirs):
            cse = None if cse_dirs is None else Path(cse_dirs[k])
            self.items += [(Path(split), cse, example_id) for example_id in split_ids(split)]
        self.symmetry, self.colors, self.charts = symmetry, colors, charts
        self.augment_config = augment_config or AugmentConfig()

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int) -> dict[str, np.ndarray]:
        """The raw example as numpy arrays (see `bodymap.data.augment` for keys)."""
        split, cse_dir, example_id = self.items[index]
        gt = load_gt(split / "gt" / f"{example_id}.npz")
        vertex = gt["vertex"].astype(np.int32)
        example = {
            "image": read_image(image_path(split, example_id)),
            "vertex": vertex,
            "mask": (vertex >= 0).astype(np.float32),
            "weight": gt.get("weight", np.ones(vertex.shape, np.float32)).astype(np.float32),
        }
        if cse_dir is not None:
            example.update(load_cse(cse_dir / f"{example_id}.npz"))
        return example

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One augmented training example as tensors.

        Returns:
            image [3,H,W] float32 in [0,1]; vertex [H,W] int64 (-1 bg); chart [H,W] int64 (0 bg);
            mask, weight [H,W] float32;
            cse [4,H,W] float32 when CSE inputs are configured.
        """
        example = augment(self.example(index), self.augment_config, self.symmetry, rng)
        out = {
            "image": torch.from_numpy(example["image"].transpose(2, 0, 1).astype(np.float32) / 255.0),
            "vertex": torch.from_numpy(example["vertex"].astype(np.int64)),
            "chart": torch.from_numpy(
                np.where(example["vertex"] >= 0, self.charts[example["vertex"]], 0).astype(np.int64)
            ),
            "mask": torch.from_numpy(example["mask"].astype(np.float32)),
            "weight": torch.from_numpy(example["weight"].astype(np.float32)),
        }
        if "cse_vertex" in example:
            out["cse"] = torch.from_numpy(cse_input(example["cse_vertex"], example["cse_score"], self.colors))
        return out
