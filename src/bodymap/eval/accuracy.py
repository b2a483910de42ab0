"""Point metrics of an image-level vertex prediction: geodesic accuracy (cm) and pixel-window accuracy (px).

- **Geodesic accuracy** (Slim DensePose, Neverova et al. CVPR 2019, Sec. 5 and Table 2): a GT point with GT vertex
  v is correct within c cm when the vertex predicted at its pixel lies within c cm of v geodesically; a background
  prediction is wrong. Defined on sparse DensePose-COCO points and on every pixel of dense truth alike.
- **Pixel-window accuracy** (BodyMap, Ianina et al. CVPR 2022, Table 2: "the percentage of pixels colored correctly
  within a specified threshold", "correctly matched within the established error window (px)"), read from the
  prediction's side: every GT foreground pixel p of person P predicts a vertex u; its error is how far, in the
  image, u truly is from p, i.e. the distance from p to the nearest pixel of P where the ground truth shows u.
  Where the GT does not show u exactly (at 128 px a person has fewer pixels than the template has vertices), it
  shows u's geodesically nearest visible vertex s(u); u counts as visible when d(u, s(u)) is within two pixel
  footprints of P (`locate.pixel_footprint`, floored at the template's mean edge length). A background prediction,
  or a vertex the image does not show on P (behind the body, on another person, off-image), is a miss.
  So the ground truth scores 100 at every window, a map off by a few centimetres on the surface scores high at a
  window of a few pixels, and shuffled, random or constant maps score about the share of the person's pixels that
  lie within the window of one random spot (tests/test_eval_metrics.py checks all four).
  Reported at the configured windows in image pixels (`window_<w>px`) and **scaled to the person's size**
  (`window_scaled_<w>px`): window w × h / H for a person whose box is h pixels tall, H =
  `reference_height_px` (1024 by default, a person filling a ~1024² image as in the paper), so figures at 128 px and
  at the paper's resolution compare. It needs dense truth: on sparse DensePose-COCO points nothing says where the
  predicted vertex really is, so sets without dense truth report no window figure (None).

Both are reported in percent over all points and per part group (`PART_GROUPS`) of the GT vertex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodymap.densepose import PART_GROUPS
from bodymap.eval.locate import PixelGroups, nearest_member, person_heights, person_labels, pixel_footprint
from bodymap.template.geodesic import Geodesics


def geodesic_error(gt_vertex: np.ndarray, pred_vertex: np.ndarray, geodesics: Geodesics) -> np.ndarray:
    """d(gt, pred) in metres for [N] int vertex ids; inf where either is -1. Returns [N] float64."""
    out = np.full(len(gt_vertex), np.inf)
    ok = (gt_vertex >= 0) & (pred_vertex >= 0)
    out[ok] = geodesics.pair(gt_vertex[ok], pred_vertex[ok])
    return out


@dataclass(frozen=True)
class VisiblePerson:
    """What the ground truth of one image shows of one person.

    Attributes:
        pixels: [N] int64 flat indices of the person's GT pixels (raster order); vertex: [N] their GT vertices.
        groups: those pixels grouped by GT vertex.
        nearest: [V] int64 group index of the shown vertex nearest to each template vertex; distance: [V] float32 m.
        tolerance: metres; a vertex farther than this from every shown vertex is not visible on this person.
        height: pixel height of the person's GT box.
    """

    pixels: np.ndarray
    vertex: np.ndarray
    groups: PixelGroups
    nearest: np.ndarray
    distance: np.ndarray
    tolerance: float
    height: int


def visible_surface(
    vertex: np.ndarray, person: np.ndarray | None, geodesics: Geodesics, min_spacing_m: float
) -> list[VisiblePerson]:
    """The visible surface of every person of a dense GT image (vertex, person: [H, W] int, -1 background).

    min_spacing_m: the template's mean edge length (the visibility tolerance is at least twice it).
    """
    labels = person_labels(vertex, person)
    footprint = pixel_footprint(vertex, labels, geodesics)
    heights = person_heights(labels)
    width = vertex.shape[1]
    flat_labels, flat_vertex = labels.ravel(), vertex.ravel()
    out = []
    for k, height in heights.items():
        pixels = np.flatnonzero(flat_labels == k)
        shown = flat_vertex[pixels]
        groups = PixelGroups.of(shown, pixels, width)
        nearest, distance = nearest_member(geodesics, groups.values)
        tolerance = 2.0 * max(footprint.get(k, 0.0), min_spacing_m)
        out.append(VisiblePerson(pixels, shown, groups, nearest, distance, tolerance, height))
    return out


def window_errors(people: list[VisiblePerson], pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The window metric's error of every GT foreground pixel (see the module docstring).

    Args:
        people: `visible_surface` of the GT image; pred: [H, W] int predicted vertices (-1 background).
    Returns:
        (error [N] float64 pixels, inf for a miss; height [N] int64 of the pixel's person; gt_vertex [N] int),
        over the people's pixels in order.
    """
    errors, heights, vertices = [], [], []
    flat = pred.ravel()
    for p in people:
        u = flat[p.pixels]
        error = np.full(len(u), np.inf)
        ok = u >= 0
        ok[ok] = p.distance[u[ok]] <= p.tolerance
        y, x = np.divmod(p.pixels[ok], p.groups.width)
        error[ok] = p.groups.distance(x, y, p.nearest[u[ok]])
        errors.append(error)
        heights.append(np.full(len(u), p.height, np.int64))
        vertices.append(p.vertex)
    if not errors:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(errors), np.concatenate(heights), np.concatenate(vertices)


def rates(correct: np.ndarray, chart: np.ndarray | None, name: str) -> dict[str, float | None]:
    """`name`: percent of True in [N] bool, plus `name_<group>` over the points whose chart is in each part group
    (None for a group without points) unless chart is None."""
    out: dict[str, float | None] = {name: 100.0 * float(correct.mean()) if len(correct) else None}
    if chart is not None:
        for group, charts in PART_GROUPS.items():
            sel = np.isin(chart, charts)
            out[f"{name}_{group}"] = 100.0 * float(correct[sel].mean()) if sel.any() else None
    return out


def cm_key(cm: float) -> str:
    return f"cm_{cm:g}"


def window_key(px: int, scaled: bool = False) -> str:
    return f"window_scaled_{px}px" if scaled else f"window_{px}px"


class PointAccumulator:
    """Collects per-point geodesic errors and per-pixel window errors image by image; `metrics()` gives the rates.

    `add_points` takes sparse points (cm accuracy only); `add_dense` a dense GT image (cm accuracy on every GT
    pixel, and window accuracy). Window figures are None when no dense image was added.
    """

    def __init__(
        self,
        geodesics: Geodesics,
        vertex_chart: np.ndarray,
        *,
        windows_px: tuple[int, ...],
        cm: tuple[float, ...],
        min_spacing_m: float,
        reference_height_px: float = 1024.0,
    ) -> None:
        """vertex_chart: [V] uint8 chart of every template vertex (for the per-part breakdowns); min_spacing_m: the
        template's mean edge length; reference_height_px: the person height of the scaled windows."""
        self.geodesics = geodesics
        self.vertex_chart = vertex_chart
        self.windows = tuple(windows_px)
        self.cm = tuple(cm)
        self.min_spacing_m = float(min_spacing_m)
        self.reference_height_px = float(reference_height_px)
        self.errors: list[np.ndarray] = []
        self.charts: list[np.ndarray] = []
        self.window: list[np.ndarray] = []
        self.heights: list[np.ndarray] = []
        self.window_charts: list[np.ndarray] = []

    def add_points(self, x: np.ndarray, y: np.ndarray, gt_vertex: np.ndarray, pred: np.ndarray) -> None:
        """Sparse points: x, y [N] int pixels, gt_vertex [N] int (points with -1 are skipped); pred [H, W] int."""
        keep = gt_vertex >= 0
        x, y, gt_vertex = x[keep], y[keep], gt_vertex[keep]
        self.errors.append(geodesic_error(gt_vertex, pred[y, x], self.geodesics))
        self.charts.append(self.vertex_chart[gt_vertex])

    def add_dense(
        self, vertex: np.ndarray, person: np.ndarray | None, pred: np.ndarray, people: list[VisiblePerson] | None = None
    ) -> None:
        """A dense GT image (vertex, person [H, W], -1 background) and its prediction pred [H, W].

        people: its `visible_surface`, when the caller keeps it to score several predictions of one image.
        """
        if people is None:
            people = visible_surface(vertex, person, self.geodesics, self.min_spacing_m)
        y, x = np.nonzero(vertex >= 0)
        self.add_points(x, y, vertex[y, x], pred)
        error, height, gt = window_errors(people, pred)
        self.window.append(error)
        self.heights.append(height)
        self.window_charts.append(self.vertex_chart[gt])

    @property
    def num_points(self) -> int:
        return int(sum(len(c) for c in self.charts))

    def metrics(self) -> dict[str, float | None]:
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        chart = np.concatenate(self.charts) if self.charts else np.zeros(0, np.uint8)
        window = np.concatenate(self.window) if self.window else np.zeros(0)
        heights = np.concatenate(self.heights) if self.heights else np.zeros(0)
        window_chart = np.concatenate(self.window_charts) if self.window_charts else np.zeros(0, np.uint8)
        out: dict[str, float | None] = {}
        for w in self.windows:
            out.update(rates(window <= w, window_chart, window_key(w)))
        for w in self.windows:
            scaled = window <= w * heights / self.reference_height_px
            out.update(rates(scaled, None, window_key(w, scaled=True)))
        for c in self.cm:
            out.update(rates(errors <= c / 100.0, chart, cm_key(c)))
        return out


__all__ = [
    "PointAccumulator",
    "VisiblePerson",
    "cm_key",
    "geodesic_error",
    "rates",
    "visible_surface",
    "window_errors",
    "window_key",
]
