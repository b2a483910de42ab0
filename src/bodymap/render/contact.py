"""A contact sheet of rendered samples with their GT overlaid, to look at (written as `contact_sheet.png`).

Each sample is a row of three panels: the image (coco-like: with its sparse `dp_*` points coloured by chart), the
image blended with the GT charts, and the GT vertex in the template's colour code (white background).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from bodymap.io import read_image, write_image
from bodymap.template.mesh import BodyTemplate
from bodymap.template.pictures import chart_palette

PANEL_MIN = 128


def _panels(image: np.ndarray, gt: dict[str, np.ndarray], template: BodyTemplate, points: list[tuple]) -> np.ndarray:
    palette = chart_palette()
    chart = gt["chart"]
    fg = (chart > 0)[..., None]
    blend = np.where(fg, (0.4 * image + 0.6 * palette[chart]).astype(np.uint8), image)
    code = np.where((gt["vertex"] >= 0)[..., None], template.colors[np.maximum(gt["vertex"], 0)], 255).astype(np.uint8)
    scale = max(1, -(-PANEL_MIN // image.shape[0]))
    panels = [np.ascontiguousarray(p) for p in (image, blend, code)]
    if scale > 1:
        panels = [cv2.resize(p, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for p in panels]
    for x, y, c in points:
        colour = [int(v) for v in palette[c]]
        cv2.circle(panels[0], (int(x * scale), int(y * scale)), max(1, scale), colour, -1)
    return np.concatenate(panels, axis=1)


def _label(row: np.ndarray, text: str) -> np.ndarray:
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    cv2.rectangle(row, (0, 0), (w + 5, h + 5), (0, 0, 0), -1)
    cv2.putText(row, text, (2, h + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return row


def _dp_points(annotations_file: Path, image_id: int) -> list[tuple]:
    if not annotations_file.exists():
        return []
    points = []
    for ann in json.loads(annotations_file.read_text())["annotations"]:
        if ann["image_id"] != image_id or "dp_x" not in ann:
            continue
        x, y, w, h = ann["bbox"]
        points += [
            (px * w / 255.0 + x, py * h / 255.0 + y, c)
            for px, py, c in zip(ann["dp_x"], ann["dp_y"], ann["dp_I"], strict=True)
        ]
    return points


def contact_sheet(root: Path, template: BodyTemplate, samples: int, path: Path) -> Path | None:
    """Draw up to `samples` rows (half train, a quarter coco-like, a quarter video) from the output at `root`."""
    picks: list[tuple[str, Path, Path, list[tuple]]] = []
    train = sorted((root / "train" / "images").glob("*.png"))[: max(1, samples // 2)]
    picks += [("train " + p.stem, p, root / "train" / "gt" / f"{p.stem}.npz", []) for p in train]
    coco_dir = root / "coco_like" / "train"
    for p in sorted((coco_dir / "images").glob("*.jpg"))[: max(1, samples // 4)]:
        gt = root / "coco_like_dense" / "train" / "gt" / f"{p.stem}.npz"
        picks.append(("coco-like " + p.stem, p, gt, _dp_points(coco_dir / "annotations.json", int(p.stem))))
    video = sorted((root / "video" / "images" / "000").glob("*.png")) if (root / "video").exists() else []
    for p in video[:: max(1, len(video) // max(1, samples // 4))][: max(1, samples // 4)]:
        picks.append(("video 000/" + p.stem, p, root / "video" / "gt" / "000" / f"{p.stem}.npz", []))
    rows = []
    for label, image_path, gt_path, points in picks[:samples]:
        with np.load(gt_path) as gt:
            rows.append(_label(_panels(read_image(image_path), dict(gt), template, points), label))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    # Two columns of rows keep the sheet roughly square.
    half = -(-len(rows) // 2)
    left, right = rows[:half], rows[half:]
    right += [np.full_like(rows[0], 255)] * (len(left) - len(right))
    sheet = np.concatenate([np.concatenate(left, axis=0), np.concatenate(right, axis=0)], axis=1)
    write_image(path, sheet)
    return path


__all__ = ["contact_sheet"]
