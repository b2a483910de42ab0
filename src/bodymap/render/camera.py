"""Pinhole cameras: look-at construction, projection, per-pixel rays. OpenCV axes (x right, y down, z forward).

World frame: y up, the ground is y = 0 (metres). Pixel centres are at integer + 0.5 (docs/formats.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bodymap.determinism import ordered_matmul


@dataclass(frozen=True)
class Camera:
    """A perspective camera.

    Attributes:
        origin: [3] float64 camera centre, world metres.
        cam_to_world: [3, 3] float64 rotation, columns = the camera's x (right), y (down), z (forward) in world axes.
        focal: focal length in pixels (square pixels); width, height: image size; principal point at the centre.
    """

    origin: np.ndarray
    cam_to_world: np.ndarray
    focal: float
    width: int
    height: int

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels."""
        return self.focal, self.focal, self.width / 2.0, self.height / 2.0

    @property
    def K(self) -> np.ndarray:
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points [..., 3] -> camera coordinates [..., 3] (z = depth along the optical axis)."""
        return ordered_matmul(np.asarray(points, np.float64) - self.origin, self.cam_to_world)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [..., 3] -> (pixel positions [..., 2] float64 (x, y), depth [...] float64).

        Points behind the camera get depth <= 0 and meaningless positions; callers mask them.
        """
        cam = self.to_camera(points)
        z = cam[..., 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        fx, fy, cx, cy = self.intrinsics
        return np.stack([fx * cam[..., 0] / safe + cx, fy * cam[..., 1] / safe + cy], axis=-1), z

    @cached_property
    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel unit ray directions [H*W, 3] float32 (world) and z-per-unit-length [H*W] float32, row-major."""
        fx, fy, cx, cy = self.intrinsics
        x = ((np.arange(self.width, dtype=np.float32) + 0.5 - cx) / fx)[None, :]
        y = ((np.arange(self.height, dtype=np.float32) + 0.5 - cy) / fy)[:, None]
        inv = (1.0 / np.sqrt(x * x + y * y + 1.0)).ravel().astype(np.float32)  # (H*W,) = z of the unit ray
        r = self.cam_to_world.astype(np.float32)
        # world = R @ [x, y, 1] * inv, written per component to avoid an (H*W, 3) intermediate in float64.
        dirs = np.empty((self.height * self.width, 3), np.float32)
        for k in range(3):
            dirs[:, k] = ((r[k, 0] * x + r[k, 1] * y) + r[k, 2]).ravel() * inv
        return dirs, inv

    def record(self) -> dict:
        """JSON-ready description (manifest): K, cam_to_world, origin, world_to_camera translation."""
        return {
            "K": np.round(self.K, 6).tolist(),
            "cam_to_world": np.round(self.cam_to_world, 8).tolist(),
            "origin": np.round(self.origin, 6).tolist(),
            "width": self.width,
            "height": self.height,
        }


def look_at(origin: np.ndarray, target: np.ndarray, roll_deg: float, fov_deg: float, width: int, height: int) -> Camera:
    """A camera at `origin` looking at `target` (world, metres), rolled about its optical axis, with a vertical FOV."""
    origin = np.asarray(origin, np.float64)
    forward = np.asarray(target, np.float64) - origin
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 1.0, 0.0])
    if abs(float(forward @ up)) > 0.999:  # looking straight up or down: any horizontal right vector will do
        up = np.array([0.0, 0.0, 1.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    roll = np.deg2rad(roll_deg)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    focal = (height / 2.0) / np.tan(np.deg2rad(fov_deg) / 2.0)
    return Camera(origin, np.stack([right, down, forward], axis=1), float(focal), int(width), int(height))


def orbit_origin(target: np.ndarray, distance: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Camera centre on a sphere around `target`: azimuth 0 = in front of a person facing +z, elevation up."""
    e, a = np.deg2rad(elevation_deg), np.deg2rad(azimuth_deg)
    return np.asarray(target, np.float64) + distance * np.array(
        [np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)]
    )


__all__ = ["Camera", "look_at", "orbit_origin"]
