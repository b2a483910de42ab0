"""Pictures of the template to look at: coloured by chart, colour code, U and V; front and back views."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bodymap.io import write_image
from bodymap.raycast import MeshQuery, nearest_corner
from bodymap.template.charts import vertex_normals
from bodymap.template.mesh import BodyTemplate


def chart_palette() -> np.ndarray:
    """[25, 3] uint8 RGB: white background plus 24 well-separated chart colours."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    extra = matplotlib.colormaps["Set1"]
    colours = [cmap(i)[:3] for i in range(20)] + [extra(i)[:3] for i in range(4)]
    return (np.array([(1.0, 1.0, 1.0), *colours]) * 255).astype(np.uint8)


def orthographic_view(template: BodyTemplate, size: int, back: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the rest-pose template orthographically from the front (+z) or back.

    Returns:
        (vertex [H, W] int32 nearest-corner vertex or -1, shade [H, W] float32 Lambert term).
    """
    v = template.vertices
    lo, hi = v.min(axis=0), v.max(axis=0)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1])) * 1.05
    centre = (lo + hi) / 2.0
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    px = (xs + 0.5) / size - 0.5
    py = 0.5 - (ys + 0.5) / size
    sign = -1.0 if back else 1.0
    # Front camera at +z looking down -z: image right is the person's left (+x); the back view mirrors that.
    origins = np.stack(
        [centre[0] + sign * px * extent, centre[1] + py * extent, np.full_like(px, centre[2] + sign * 10.0)], axis=-1
    ).reshape(-1, 3)
    directions = np.tile(np.array([0.0, 0.0, -sign], np.float32), (len(origins), 1))
    hits = MeshQuery(v, template.faces, device="cpu").cast(origins, directions)
    vertex = nearest_corner(template.faces, hits.face, hits.bary).reshape(size, size)
    normals = vertex_normals(v, template.faces)
    shade = np.where(vertex >= 0, np.abs(normals[np.maximum(vertex, 0), 2]), 0.0).astype(np.float32)
    return vertex, shade


def _colourise(vertex: np.ndarray, shade: np.ndarray, colours: np.ndarray) -> np.ndarray:
    rgb = colours[np.maximum(vertex, 0)].astype(np.float32) * (0.55 + 0.45 * shade[..., None])
    rgb[vertex < 0] = 255.0
    return rgb.astype(np.uint8)


def save_pictures(template: BodyTemplate, directory: str | Path, size: int = 512) -> list[Path]:
    """Write charts.png, colour_code.png, u.png and v.png (each front | back) into `directory`."""
    import matplotlib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    views = [orthographic_view(template, size, back=b) for b in (False, True)]
    viridis = (np.array(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256)))[:, :3] * 255).astype(np.uint8)
    per_vertex = {
        "charts": chart_palette()[template.chart],
        "colour_code": template.colors,
        "u": viridis[np.clip((template.uv[:, 0] * 255).round().astype(int), 0, 255)],
        "v": viridis[np.clip((template.uv[:, 1] * 255).round().astype(int), 0, 255)],
    }
    written = []
    for name, colours in per_vertex.items():
        panels = []
        for (vertex, shade), label in zip(views, ("front", "back"), strict=True):
            panel = _colourise(vertex, shade, colours)
            cv2.putText(panel, f"{name} - {label}", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
            panels.append(panel)
        path = directory / f"{name}.png"
        write_image(path, np.concatenate(panels, axis=1))
        written.append(path)
    return written
