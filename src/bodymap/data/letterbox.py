"""The one preprocessing rule between a photo and the networks: letterbox to the network size, and back.

A photo of H x W pixels is scaled by s = size / max(H, W) with its top-left corner fixed, then padded right and
bottom to size x size (padding is black image, background labels). Coordinates are continuous pixels: pixel
(row i, column j) covers [j, j + 1) x [i, i + 1), so DensePose's point (dp_x, dp_y) in box (x, y, w, h) is at
(dp_x * w / 255 + x, dp_y * h / 255 + y), and the network sees a point p at p * s. Maps are resampled so that each
output pixel centre takes the value at the same continuous point of the input (nearest-neighbour for labels,
bilinear for the image), which makes the way back the exact inverse for points and, when s >= 1, for label maps.

Training (`bodymap.data.rendered`), evaluation (`bodymap.predict.predict_images`) and `bodymap predict` all go
through `Letterbox`; nothing else resizes a photo for a network.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LABELS = ("vertex", "cse_vertex")  # nearest-neighbour, -1 outside the photo
CONTINUOUS_NEAREST = ("mask", "mask_weight", "weight", "cse_score", "score")  # nearest, 0 outside


@dataclass(frozen=True)
class Letterbox:
    """The letterbox of one photo: `height` x `width` pixels into a `size` x `size` network input."""

    height: int
    width: int
    size: int

    @classmethod
    def of(cls, image: np.ndarray, size: int) -> Letterbox:
        return cls(int(image.shape[0]), int(image.shape[1]), int(size))

    @property
    def scale(self) -> float:
        return self.size / max(self.height, self.width)

    def to_network(self, xy: np.ndarray) -> np.ndarray:
        """Photo points [..., 2] (x, y continuous pixels) -> network input points [..., 2] float64."""
        return np.asarray(xy, np.float64) * self.scale

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Network input points [..., 2] -> photo points [..., 2] float64 (the inverse of `to_network`)."""
        return np.asarray(xy, np.float64) / self.scale

    @staticmethod
    def _matrix(scale: float) -> np.ndarray:
        # cv2 addresses pixel centres at integers: continuous p' = p * s is centre c' = (c + 0.5) * s - 0.5.
        shift = 0.5 * scale - 0.5
        return np.array([[scale, 0.0, shift], [0.0, scale, shift]], np.float64)

    def example_to_network(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every map of an example ([H, W] or [H, W, 3]) -> [size, size] (image bilinear, the rest nearest)."""
        return warp(example, self._matrix(self.scale), (self.size, self.size))

    def image_to_network(self, image: np.ndarray) -> np.ndarray:
        """A photo [H, W, 3] uint8 -> the network input [size, size, 3] uint8."""
        return self.example_to_network({"image": image})["image"]

    def maps_to_image(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Network-size maps [size, size] -> the photo's [H, W] (labels and scores nearest-neighbour)."""
        return warp(maps, self._matrix(1.0 / self.scale), (self.width, self.height))


def warp(example: dict[str, np.ndarray], matrix: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Apply a 2x3 affine (cv2's pixel-centre convention) to every map; outside the source the image is black and
    labels are background. size: (width, height) of the output."""
    w, h = size
    out = {}
    for key, value in example.items():
        if key in LABELS:
            out[key] = cv2.warpAffine(
                value, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=-1
            ).astype(np.int32)
        elif key == "image":
            out[key] = cv2.warpAffine(value, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        else:
            out[key] = cv2.warpAffine(
                value.astype(np.float32), matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT
            )
    return out


__all__ = ["Letterbox", "warp"]
