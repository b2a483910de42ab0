"""Appearance: procedural garment textures in UV space, Lambert + ambient shading under random lights.

Textures live in the template's chart UVs (skirts: cylindrical UVs), so chart borders show as garment seams.
Everything is vectorised over the foreground pixels of an image. Paper Sec. 3.1 (appearance variety).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bodymap.determinism import ordered_matmul
from bodymap.render.identity import Identity, Material


@lru_cache(maxsize=256)
def _noise_grid(seed: int, size: int = 7) -> np.ndarray:
    grid = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    return np.concatenate([grid, grid[:1]], axis=0)[:, [*range(size), 0]]  # wraps around in u and v


def value_noise(uv: np.ndarray, seed: int, scale: float) -> np.ndarray:
    """Smooth periodic noise in [0, 1] at uv [P, 2] (bilinear over a random grid). Returns [P] float32."""
    grid = _noise_grid(seed)
    size = grid.shape[0] - 1
    p = np.mod(uv * scale / 4.0, 1.0) * size
    i = np.minimum(p.astype(np.int64), size - 1)
    f = p - i
    f = f * f * (3 - 2 * f)
    g00, g10 = grid[i[:, 0], i[:, 1]], grid[i[:, 0] + 1, i[:, 1]]
    g01, g11 = grid[i[:, 0], i[:, 1] + 1], grid[i[:, 0] + 1, i[:, 1] + 1]
    top = g00 * (1 - f[:, 0]) + g10 * f[:, 0]
    bottom = g01 * (1 - f[:, 0]) + g11 * f[:, 0]
    return (top * (1 - f[:, 1]) + bottom * f[:, 1]).astype(np.float32)


def texture(material: Material, uv: np.ndarray) -> np.ndarray:
    """Albedo [P, 3] float32 (0..1) of `material` at texture coordinates uv [P, 2]."""
    a = np.asarray(material.color_a, np.float32)
    b = np.asarray(material.color_b, np.float32)
    if material.pattern == "solid":
        return np.broadcast_to(a, (len(uv), 3)).copy()
    if material.pattern == "stripes":
        t = uv[:, 0] * np.cos(material.angle) + uv[:, 1] * np.sin(material.angle)
        w = (np.sin(2 * np.pi * material.frequency * t) > 0.2).astype(np.float32)
    elif material.pattern == "checks":
        cells = np.floor(uv * material.frequency).astype(np.int64)
        w = ((cells[:, 0] + cells[:, 1]) % 2).astype(np.float32)
    else:
        w = value_noise(uv, material.seed, material.frequency)
    return a[None] * (1 - w[:, None]) + b[None] * w[:, None]


def hair_material(identity: Identity) -> Material:
    """Hair: fine dark/light streaks in the identity's hair colour."""
    c = np.asarray(identity.hair_color)
    return Material("stripes", tuple(c), tuple(c * 0.7), 60.0, 1.45, identity.index)


def identity_albedo(identity: Identity, material_ids: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Albedo [P, 3] float32 per pixel from its material id [P] (garments.MAT_*) and texture coordinates [P, 2]."""
    out = np.empty((len(material_ids), 3), np.float32)
    skin = np.asarray(identity.skin, np.float32)
    materials = {
        0: None,
        1: None,
        2: identity.top_material,
        3: identity.bottom_material,
        4: hair_material(identity),
    }
    for mat in np.unique(material_ids):
        sel = material_ids == mat
        if mat == 0:
            # Skin: the tone with a faint large-scale variation (blush, tan lines), not a flat colour.
            out[sel] = skin[None] * (0.92 + 0.16 * value_noise(uv[sel], identity.index, 2.0))[:, None]
        elif mat == 1:
            out[sel] = np.array([0.45, 0.36, 0.30], np.float32)  # eyes and tongue: a dark iris-like tone
        else:
            out[sel] = texture(materials[int(mat)], uv[sel])
    return out


@dataclass(frozen=True)
class Lighting:
    """Ambient + directional lights. directions: [L, 3] unit vectors towards the lights (world); colours [L, 3]."""

    ambient: float
    ambient_color: tuple[float, float, float]
    directions: np.ndarray
    colors: np.ndarray

    def record(self) -> dict:
        return {
            "ambient": round(self.ambient, 4),
            "ambient_color": [round(c, 4) for c in self.ambient_color],
            "directions": np.round(self.directions, 4).tolist(),
            "colors": np.round(self.colors, 4).tolist(),
        }


def sample_lighting(rng: np.random.Generator, camera_forward: np.ndarray) -> Lighting:
    """A key light from above, biased towards the camera's side, plus an optional fill light and ambient."""
    lights, colours = [], []
    for k in range(1 if rng.random() < 0.4 else 2):
        elevation = np.deg2rad(rng.uniform(15, 75))
        # Light azimuth around the camera's viewing direction (lit from the camera side more often than not).
        base = np.arctan2(-camera_forward[0], -camera_forward[2])
        azimuth = base + rng.normal(0.0, 0.9 if k == 0 else 1.8)
        lights.append([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
        tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
        colours.append(tint * (rng.uniform(0.55, 0.9) if k == 0 else rng.uniform(0.15, 0.35)))
    ambient_tint = 1.0 + rng.uniform(-0.06, 0.06, 3)
    return Lighting(
        ambient=float(rng.uniform(0.25, 0.5)),
        ambient_color=tuple(float(c) for c in ambient_tint),
        directions=np.array(lights, np.float32),
        colors=np.array(colours, np.float32),
    )


def shade(albedo: np.ndarray, normals: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Lambert + ambient. albedo, normals: [P, 3] float32 (normals unit, world). Returns [P, 3] float32 in 0..1."""
    # Products without BLAS (`ordered_matmul`): the same pixel values on any CPU.
    lambert = np.maximum(ordered_matmul(normals, lighting.directions.T), 0.0)  # (P, L)
    ambient = lighting.ambient * np.asarray(lighting.ambient_color, np.float32)[None]
    light = ambient + ordered_matmul(lambert, lighting.colors)
    return np.clip(albedo * light, 0.0, 1.0)


__all__ = ["Lighting", "identity_albedo", "sample_lighting", "shade", "texture", "value_noise"]
