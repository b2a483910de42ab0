"""Training augmentations on a dense-correspondence example (BodyMap Sec. 3.6; Slim DensePose Sec. 3).

An example is a dict of numpy arrays: `image [H,W,3] uint8`, `vertex [H,W] int32` (-1 background),
`mask [H,W] float32`, `weight [H,W] float32`, and optionally `cse_vertex [H,W] int32` with `cse_score [H,W]
float32`. Geometry is applied to every map alike (labels with nearest-neighbour sampling); a horizontal flip also
swaps left and right on the body by sending vertices through the template's symmetry map.
"""

from __future__ import annotations

import cv2
import numpy as np

from bodymap.config import AugmentParams
from bodymap.data.letterbox import LABELS as _LABELS
from bodymap.data.letterbox import Letterbox, warp


# Every augmentation off (the `augment` params' defaults turn them on): still one `augment` call per example, so the
# example's RNG draws are the same whichever are enabled.
NO_AUGMENT = AugmentParams(upper_body_crop=0.0, rotation_deg=0.0, hue=0.0, saturation=0.0, flip=0.0)


def flip(example: dict[str, np.ndarray], symmetry: np.ndarray) -> dict[str, np.ndarray]:
    """Mirror the image left-right; vertices map to their mirror vertex (the person's left becomes right)."""
    out = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in example.items()}
    for key in _LABELS:
        if key in out:
            v = out[key]
            out[key] = np.where(v >= 0, symmetry[np.maximum(v, 0)], -1).astype(np.int32)
    return out


def letterbox(example: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Scale so the long side is `size`, then pad right/bottom to size x size: the one rule (`data.letterbox`)."""
    return Letterbox.of(example["image"], size).example_to_network(example)


def rotate(example: dict[str, np.ndarray], degrees: float) -> dict[str, np.ndarray]:
    """Rotate about the image centre (in-plane camera roll)."""
    h, w = example["image"].shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    return warp(example, matrix, (w, h))


def upper_body_crop(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Zoom on the top 35–60% of the foreground's bounding box (BodyMap trains on upper-body crops)."""
    ys, xs = np.nonzero(example["mask"] > 0.5)
    if len(ys) < 16:
        return example
    h, w = example["image"].shape[:2]
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    crop_h = (bottom - top + 1) * rng.uniform(0.35, 0.6)
    side = max(crop_h, (right - left + 1) * 1.1, 8.0)
    cx = (left + right) / 2.0
    cy = top + crop_h / 2.0
    scale = min(h, w) / side
    # Map the square crop centred at (cx, cy) with `side` pixels onto the whole output image.
    matrix = np.array([[scale, 0.0, w / 2.0 - scale * cx], [0.0, scale, h / 2.0 - scale * cy]], np.float64)
    return warp(example, matrix, (w, h))


def colour_jitter(image: np.ndarray, hue: float, saturation: float, rng: np.random.Generator) -> np.ndarray:
    """Shift hue by up to ±hue (fraction of the circle) and scale saturation by 1 ± saturation."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 180.0) % 180.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + rng.uniform(-saturation, saturation)), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def augment(
    example: dict[str, np.ndarray], config: AugmentParams, symmetry: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Apply the configured augmentations in a fixed order with draws from `rng` (deterministic per rng)."""
    draws = rng.random(4)
    if draws[0] < config.upper_body_crop:
        example = upper_body_crop(example, rng)
    if config.rotation_deg > 0:
        example = rotate(example, float(rng.uniform(-config.rotation_deg, config.rotation_deg)))
    if draws[1] < config.flip:
        example = flip(example, symmetry)
    if config.hue > 0 or config.saturation > 0:
        example = {**example, "image": colour_jitter(example["image"], config.hue, config.saturation, rng)}
    return example
