"""Video frame pairs with estimated optical flow, for Slim DensePose's equivariance loss on real motion.

A pair is frame t and frame t + k (1 <= k <= window) of one sequence, with the flow t → t + k estimated by OpenCV
(never the renderer's exact flow) and a validity mask from the forward-backward check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bodymap.data.coco import video_frames
from bodymap.data.images import image_key
from bodymap.io import read_cse, read_image
from bodymap.models.inputs import cse_input
from bodymap.pseudo_gt.flow import estimate_flow, sample_flow


class FramePairs:
    """Pairs from a PoseTrack-style set (annotations.json with vid_id / frame_id) and its CSE outputs.

    Args:
        root: the set's directory (file names in its annotations.json are relative to it).
        cse_dir: CSE outputs for the set (`<key>.npz`). colors: [V, 3] template colour code.
        window: largest frame gap. method: 'dis' or 'farneback'. max_fb_error_px: validity threshold.
    """

    def __init__(
        self,
        root: Path,
        cse_dir: Path,
        colors: np.ndarray,
        window: int = 3,
        method: str = "dis",
        max_fb_error_px: float = 5.0,
    ) -> None:
        path = Path(root) / "annotations.json"
        data = json.loads(path.read_text())
        frame_of = video_frames(path, data)
        frames: dict[object, dict[int, str]] = {}
        for image in data["images"]:
            vid, frame, _ = frame_of[image["id"]]
            frames.setdefault(vid, {})[frame] = image["file_name"]
        self.root, self.cse_dir = Path(root), Path(cse_dir)
        self.pairs = [
            (seq[f], seq[f + k]) for seq in frames.values() for f in sorted(seq) for k in range(1, window + 1) if f + k in seq
        ]
        self.colors = torch.as_tensor(np.asarray(colors, np.int64))
        self.method, self.max_fb_error_px = method, max_fb_error_px

    def __len__(self) -> int:
        return len(self.pairs)

    def _frame(self, file_name: str) -> tuple[np.ndarray, torch.Tensor]:
        rgb = read_image(self.root / file_name)
        vertex, score = read_cse(self.cse_dir / f"{image_key(file_name)}.npz")
        return rgb, cse_input(torch.from_numpy(vertex), torch.from_numpy(score), self.colors)

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        """pair_image_a/b [3,H,W], pair_cse_a/b [4,H,W], pair_flow [H,W,2] (a → b pixels), pair_valid [H,W]."""
        first, second = self.pairs[index]
        rgb_a, cse_a = self._frame(first)
        rgb_b, cse_b = self._frame(second)
        forward = estimate_flow(rgb_a, rgb_b, self.method)
        backward = estimate_flow(rgb_b, rgb_a, self.method)
        h, w = forward.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w]
        points = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
        moved = points + forward.reshape(-1, 2)
        error = np.linalg.norm(moved + sample_flow(backward, moved) - points, axis=1).reshape(h, w)
        inside = (moved[:, 0] >= 0) & (moved[:, 0] < w) & (moved[:, 1] >= 0) & (moved[:, 1] < h)
        valid = (error <= self.max_fb_error_px) & inside.reshape(h, w)

        def image(rgb: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)

        return {
            "pair_image_a": image(rgb_a),
            "pair_image_b": image(rgb_b),
            "pair_cse_a": cse_a,
            "pair_cse_b": cse_b,
            "pair_flow": torch.from_numpy(forward),
            "pair_valid": torch.from_numpy(valid.astype(np.float32)),
        }


class WithPairs:
    """A training set whose every example also carries a random frame pair (drawn from the example's RNG)."""

    def __init__(self, dataset, pairs: FramePairs) -> None:
        self.dataset, self.pairs = dataset, pairs

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {**self.dataset.sample(index, rng), **self.pairs.sample(int(rng.integers(len(self.pairs))))}
