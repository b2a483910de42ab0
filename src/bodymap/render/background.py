"""Backgrounds: procedural rooms (a wall with noise and shapes, a textured floor seen in perspective), or random
crops of images from a folder given in params.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from bodymap.errors import BodymapError
from bodymap.io import read_image
from bodymap.render.camera import Camera

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_background_images(directory: str | Path) -> list[Path]:
    """Image files of a background folder, sorted; a missing, unreadable or empty folder is a `BodymapError`."""
    directory = Path(directory)
    field = "render.appearance.background_dir"
    if not directory.is_dir():
        raise BodymapError(f"{directory}: field '{field}': background folder does not exist or is not a directory")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise BodymapError(f"{directory}: field '{field}': background folder is not readable (permission denied)")
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise BodymapError(
            f"{directory}: field '{field}': cannot list the background folder ({exc.strerror})"
        ) from None
    if not files:
        raise BodymapError(
            f"{directory}: field '{field}': no background images here (expected {', '.join(IMAGE_SUFFIXES)} files)"
        )
    return files


class Backgrounds:
    """Background images [H, W, 3] float32 in 0..1 for a camera; procedural unless `files` are given.

    Args:
        files: background image files (`list_background_images`), or None for procedural backgrounds.
        floor_probability: share of procedural backgrounds with a textured floor plane (y = 0).
    """

    def __init__(self, files: list[Path] | None, floor_probability: float = 0.6, cache_size: int = 32) -> None:
        self.files = list(files) if files else []
        self.floor_probability = floor_probability
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def _image(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = read_image(path)  # BodymapError naming the file when it is not an image
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._cache[path]

    def sample(self, rng: np.random.Generator, camera: Camera) -> np.ndarray:
        if self.files:
            return self._from_folder(rng, camera)
        floor = rng.random() < self.floor_probability
        # Drawn at half resolution and upsampled: 4x cheaper, and a soft background reads as depth of field.
        half = Camera(
            camera.origin, camera.cam_to_world, camera.focal / 2, -(-camera.width // 2), -(-camera.height // 2)
        )
        small = procedural(rng, half, floor=floor)
        return cv2.resize(small, (camera.width, camera.height), interpolation=cv2.INTER_LINEAR)

    def _from_folder(self, rng: np.random.Generator, camera: Camera) -> np.ndarray:
        image = self._image(self.files[int(rng.integers(len(self.files)))])
        h, w = image.shape[:2]
        side = max(1, int(min(h, w) * rng.uniform(0.5, 1.0)))
        y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = image[y0 : y0 + side, x0 : x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out = cv2.resize(np.ascontiguousarray(crop), (camera.width, camera.height), interpolation=cv2.INTER_AREA)
        return out.astype(np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def procedural(rng: np.random.Generator, camera: Camera, floor: bool) -> np.ndarray:
    """A room-like background: a noisy wall gradient with a few soft rectangles and, if `floor`, a tiled or noisy
    ground plane y = 0 projected through the camera (so people stand on it)."""
    h, w = camera.height, camera.width
    wall = rng.uniform(0.15, 0.9, 3).astype(np.float32)
    wall2 = np.clip(wall + rng.uniform(-0.25, 0.25, 3), 0, 1).astype(np.float32)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    image = wall[None, None] * (1 - ramp) + wall2[None, None] * ramp
    image = image * (0.8 + 0.4 * _smooth_noise(rng, h, w, int(rng.integers(3, 9)))[..., None])
    image = np.broadcast_to(image, (h, w, 3)).copy()
    for _ in range(int(rng.integers(0, 5))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * (w, h)
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.6) * h
        colour = rng.uniform(0.05, 0.95, 3)
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), colour.tolist(), -1)
    if floor:
        dirs, _ = camera.rays
        o = camera.origin
        dy = dirs[:, 1]
        t = np.where(dy < -1e-4, -o[1] / np.minimum(dy, -1e-4), np.inf)
        hit = np.isfinite(t) & (t < 40.0)
        if hit.any():
            p = o[None, [0, 2]] + t[hit, None] * dirs[hit][:, [0, 2]]
            tile = rng.uniform(0.3, 1.2)
            a = rng.uniform(0.1, 0.9, 3)
            b = np.clip(a * rng.uniform(0.5, 1.3), 0, 1)
            if rng.random() < 0.5:
                cells = np.floor(p / tile).astype(np.int64)
                wgt = ((cells[:, 0] + cells[:, 1]) % 2).astype(np.float32)
            else:
                wgt = (0.5 + 0.5 * np.sin(p[:, 0] * 3.1 / tile) * np.sin(p[:, 1] * 2.3 / tile)).astype(np.float32)
            colour = a[None] * (1 - wgt[:, None]) + b[None] * wgt[:, None]
            # Distant floor fades into the wall colour (cheap aerial perspective, hides aliasing at the horizon).
            fade = np.clip(t[hit] / 25.0, 0, 1)[:, None]
            colour = colour * (1 - fade) + wall2[None] * fade
            flat = image.reshape(-1, 3)
            flat[hit] = colour
            image = flat.reshape(h, w, 3)
    return np.clip(image, 0, 1).astype(np.float32)


__all__ = ["Backgrounds", "list_background_images", "procedural"]
