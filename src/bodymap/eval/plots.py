"""Evaluator pictures and plot data: PR curves (CSV for DVC plots, PNG) and per-image prediction-vs-GT panels.

Panels colour each pixel by the template's colour code (`template.colors`) of its vertex, so the same body point has
the same colour in GT and prediction and a displaced colour shows where the prediction goes wrong.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from bodymap.eval.densepose_ap import MODES, RECALL_POINTS, THRESHOLDS, APResult
from bodymap.io import atomic_path, write_image

_BACKGROUND = 255
_ERROR_MAX_M = 0.2  # error panel saturates at 20 cm, the largest default cm threshold
_MIN_PANEL = 256


def write_pr_csv(path: Path, precision: np.ndarray) -> None:
    """One row per recall point: recall, precision at GPS/IoU threshold 0.50 and 0.75, and the mean over the ten
    thresholds (what AP averages). precision: [T, R]."""
    t50, t75 = int(np.argmin(np.abs(THRESHOLDS - 0.5))), int(np.argmin(np.abs(THRESHOLDS - 0.75)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["recall", "precision_50", "precision_75", "precision_mean"])
    for r, recall in enumerate(RECALL_POINTS):
        row = (recall, precision[t50, r], precision[t75, r], precision[:, r].mean())
        writer.writerow([f"{v:.4f}" for v in row])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def write_pr_curves(ap: APResult, directory: Path, title: str) -> list[Path]:
    """`pr_<mode>.csv` per mode (area 'all') and `pr.png` with the three modes side by side."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch, faster import

    written = []
    fig = Figure(figsize=(4 * len(MODES), 3.6), dpi=100)
    axes = fig.subplots(1, len(MODES), sharey=True)
    for ax, mode in zip(axes, MODES, strict=True):
        precision = ap.precision[mode, "all"]
        ax.set_title(f"{mode.upper()}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if precision is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center")
            continue
        path = directory / f"pr_{mode}.csv"
        write_pr_csv(path, precision)
        written.append(path)
        for t, threshold in enumerate(THRESHOLDS):
            ax.plot(
                RECALL_POINTS,
                precision[t],
                color=matplotlib.colormaps["viridis"](t / len(THRESHOLDS)),
                lw=1,
                label=f"{threshold:.2f}" if t in (0, len(THRESHOLDS) // 2, len(THRESHOLDS) - 1) else None,
            )
        ax.legend(title="threshold", fontsize=7, title_fontsize=7, loc="lower left")
    axes[0].set_ylabel("precision")
    fig.suptitle(f"{title}: precision-recall per threshold (area all)")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.84, wspace=0.08)
    path = directory / "pr.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    written.append(path)
    return written


def colourise(vertex: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """[H, W] int vertex ids -> [H, W, 3] uint8 colour code, white background."""
    rgb = colors[np.maximum(vertex, 0)].copy()
    rgb[vertex < 0] = _BACKGROUND
    return rgb


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    panel = np.ascontiguousarray(panel)
    scale = max(panel.shape[0] / 400.0, 0.35)
    cv2.putText(panel, text, (4, int(14 * scale + 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def _error_panel(error: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Geodesic error [H, W] metres (inf for a missing prediction) -> heat map; white off the GT foreground."""
    import matplotlib

    level = np.clip(np.nan_to_num(error, posinf=_ERROR_MAX_M) / _ERROR_MAX_M, 0, 1)
    rgb = (matplotlib.colormaps["magma"](level)[..., :3] * 255).astype(np.uint8)
    rgb[~foreground] = _BACKGROUND
    return rgb


def _scale(height: int) -> int:
    """Integer upscaling so small images stay readable (panels at least ~256 px tall)."""
    return max(1, -(-_MIN_PANEL // height))


def _up(rgb: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1) if scale > 1 else rgb


def _dot(panel: np.ndarray, centre: tuple[int, int], radius: int, colour: tuple[int, ...]) -> None:
    """A filled dot with a black rim, readable on any background."""
    cv2.circle(panel, centre, radius + 1, (0, 0, 0), -1)
    cv2.circle(panel, centre, radius, colour, -1)


def dense_sample(
    image: np.ndarray | None, gt: np.ndarray, pred: np.ndarray, error: np.ndarray, colors: np.ndarray
) -> np.ndarray:
    """[H', 4W', 3] uint8: image | GT colour code | predicted colour code | geodesic error (0..20 cm)."""
    height, width = gt.shape
    if image is None or image.shape[:2] != gt.shape:
        image = np.full((height, width, 3), 200, np.uint8)
    scale = _scale(height)
    panels = [
        _label(_up(image, scale), "image"),
        _label(_up(colourise(gt, colors), scale), "ground truth"),
        _label(_up(colourise(pred, colors), scale), "prediction"),
        _label(_up(_error_panel(error, gt >= 0), scale), "error 0-20 cm"),
    ]
    return np.concatenate(panels, axis=1)


def sparse_sample(
    image: np.ndarray | None,
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    gt_vertex: np.ndarray,
    pred: np.ndarray,
    correct: np.ndarray,
    colors: np.ndarray,
) -> np.ndarray:
    """[H', 3W', 3] uint8: image with GT points in their colour code | prediction | points green (within 10 cm) or
    red."""
    height, width = shape
    if image is None or image.shape[:2] != (height, width):
        image = np.full((height, width, 3), 200, np.uint8)
    scale = _scale(height)
    radius = max(2, round(min(height, width) * scale / 150))
    left, middle = _up(image, scale).copy(), _up(colourise(pred, colors), scale).copy()
    right = left.copy()
    centres = zip((x * scale + scale // 2).tolist(), (y * scale + scale // 2).tolist(), strict=True)
    for (px, py), v, ok in zip(centres, gt_vertex.tolist(), correct.tolist(), strict=True):
        _dot(left, (px, py), radius, tuple(int(c) for c in colors[max(v, 0)]))
        cv2.circle(middle, (px, py), radius, (0, 0, 0), 1)
        cv2.circle(right, (px, py), radius + 1, (0, 170, 0) if ok else (220, 0, 0), -1)
    panels = [_label(left, "GT points"), _label(middle, "prediction"), _label(right, "within 10 cm")]
    return np.concatenate(panels, axis=1)


def vertex_maps_sample(
    image: np.ndarray,
    points: tuple[np.ndarray, np.ndarray],
    maps: list[tuple[str, np.ndarray]],
    colors: np.ndarray,
) -> np.ndarray:
    """[H', (1 + len(maps)) W', 3] uint8: the image with labelled points ([K, 2] x, y and [K] vertices) drawn in
    their colour code, then each named [H, W] vertex map in the colour code."""
    height = image.shape[0]
    scale = _scale(height)
    radius = max(1, round(min(image.shape[:2]) * scale / 200))
    left = _up(image, scale).copy()
    xy, vertex = points
    for (px, py), v in zip((xy * scale).astype(int).tolist(), vertex.tolist(), strict=True):
        _dot(left, (px, py), radius, tuple(int(c) for c in colors[v]))
    panels = [_label(left, "points")] + [_label(_up(colourise(m, colors), scale), name) for name, m in maps]
    return np.concatenate(panels, axis=1)


def save_sample(path: Path, rgb: np.ndarray) -> None:
    write_image(path, rgb)


__all__ = [
    "colourise",
    "dense_sample",
    "save_sample",
    "sparse_sample",
    "vertex_maps_sample",
    "write_pr_csv",
    "write_pr_curves",
]
