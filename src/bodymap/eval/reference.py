"""A literal, loop-by-loop implementation of the evaluator's definitions, for verification only.

Slow on purpose: one detection, one GT, one point, one threshold at a time, written to read like the definitions
(and like detectron2's `DensePoseCocoEval`) rather than to be fast. `tests/test_eval_reference.py` and
`benchmarks/evaluate.py` check that the vectorised `bodymap.eval` gives the same numbers. Nothing else should use
this module.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

from bodymap.eval.densepose_ap import AREAS, MODES, RECALL_POINTS, THRESHOLDS
from bodymap.eval.groundtruth import CocoGroundTruth, box_mask_on_image
from bodymap.eval.predictions import Instances
from bodymap.template.geodesic import Geodesics


def _distance(geodesics: Geodesics, a: int, b: int) -> float:
    return float(geodesics.pair(int(a), int(b)))


def gps(coco: CocoGroundTruth, detections: list[Instances], geodesics: Geodesics) -> list[np.ndarray]:
    """Per image [D, G] GPS, one (detection, GT, point) at a time."""
    out = []
    for i, dets in enumerate(detections):
        g0, g1 = int(coco.gt_start[i]), int(coco.gt_start[i + 1])
        table = np.zeros((len(dets), g1 - g0))
        for j in range(g1 - g0):
            g = g0 + j
            if coco.ignore[g]:
                continue
            gx, gy, gw, gh = (float(v) for v in coco.boxes[g])
            p0, p1 = int(coco.pt_start[g]), int(coco.pt_start[g + 1])
            for d in range(len(dets)):
                bx, by, bw, bh = (float(v) for v in dets.boxes[d])
                grid = dets.maps[d]
                total = 0.0
                for p in range(p0, p1):
                    px = int(float(coco.dp_x[p]) * gw / 255.0 + gx - bx)
                    py = int(float(coco.dp_y[p]) * gh / 255.0 + gy - by)
                    if px < 0 or py < 0 or px >= int(bw) or py >= int(bh):
                        continue  # outside the detection: similarity 0
                    u, v = int(grid[py, px]), int(coco.vertex[p])
                    if u < 0 or v < 0:
                        continue  # predicted background: similarity 0
                    dist = _distance(geodesics, v, u)
                    kappa = float(coco.kappa[p])
                    total += math.exp(-(dist * dist) / (2.0 * kappa * kappa))
                table[d, j] = total / (p1 - p0) if p1 > p0 else 0.0
        out.append(table)
    return out


def overlaps(coco: CocoGroundTruth, detections: list[Instances]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image mask IoU and box IoU [D, G], one detection mask at a time."""
    masks, boxes = [], []
    for i, dets in enumerate(detections):
        g0, g1 = int(coco.gt_start[i]), int(coco.gt_start[i + 1])
        if len(dets) == 0 or g1 == g0:
            masks.append(np.zeros((len(dets), g1 - g0)))
            boxes.append(np.zeros((len(dets), g1 - g0)))
            continue
        height, width = int(coco.heights[i]), int(coco.widths[i])
        rles = []
        for d in range(len(dets)):
            image = box_mask_on_image((dets.maps[d] >= 0).astype(np.uint8), dets.boxes[d], height, width)
            rles.append(mask_utils.encode(np.asfortranarray(image[:, :, None]))[0])
        crowd = [int(c) for c in coco.iscrowd[g0:g1]]
        masks.append(np.asarray(mask_utils.iou(rles, coco.rles[g0:g1], crowd), np.float64))
        boxes.append(np.asarray(mask_utils.iou(dets.boxes.tolist(), coco.boxes[g0:g1].tolist(), crowd), np.float64))
    return masks, boxes


def evaluate_image(
    sim: np.ndarray, box_iou: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray, gt_area: np.ndarray,
    det_area: np.ndarray, area: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """detectron2's evaluateImg for one image and area range: (matched [T, D] bool, ignored [T, D] bool)."""
    n_t, n_d, n_g = len(THRESHOLDS), sim.shape[0], sim.shape[1]
    ig = [bool(gt_ignore[g] or gt_area[g] < area[0] or gt_area[g] > area[1]) for g in range(n_g)]
    order = sorted(range(n_g), key=lambda g: ig[g])  # stable: ignored last
    ig = [ig[g] for g in order]
    iscrowd = [bool(crowd[g]) for g in order]
    gtm = [[False] * n_g for _ in range(n_t)]
    dtm = [[False] * n_d for _ in range(n_t)]
    dt_ig = [[all(ig)] * n_d for _ in range(n_t)]
    if n_d and n_g:
        for t, threshold in enumerate(THRESHOLDS):
            for d in range(n_d):
                best, m = min(threshold, 1 - 1e-10), -1
                for k, g in enumerate(order):
                    if gtm[t][k] and not iscrowd[k]:
                        continue
                    if m > -1 and not ig[m] and ig[k]:
                        break
                    value = sim[d, g]
                    if value < best or value == 0.0:
                        continue
                    best, m = value, k
                if m == -1:
                    continue
                dt_ig[t][d] = ig[m]
                dtm[t][d] = True
                gtm[t][m] = True
        last = n_t - 1
        for d in range(n_d):
            if dtm[last][d]:
                continue
            best, m = 0.8, -1
            for k, g in enumerate(order):
                if gtm[last][k] and not iscrowd[k]:
                    continue
                if box_iou[d, g] < best:
                    continue
                best, m = box_iou[d, g], k
            if m > -1:
                for t in range(n_t):
                    dt_ig[t][d] = ig[m]
                if ig[m]:
                    dtm[last][d] = True
                    gtm[last][m] = True
    for t in range(n_t):
        for d in range(n_d):
            if not dtm[t][d] and (det_area[d] < area[0] or det_area[d] > area[1]):
                dt_ig[t][d] = True
    return np.array(dtm, bool).reshape(n_t, n_d), np.array(dt_ig, bool).reshape(n_t, n_d)


def accumulate(
    scores: list[float], matched: np.ndarray, ignored: np.ndarray, positives: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """COCO accumulate for one mode and area, in plain loops: (precision [T, R], recall [T]) or None."""
    if positives == 0:
        return None
    order = sorted(range(len(scores)), key=lambda k: -scores[k])  # Python's sort is stable, like mergesort
    precision = np.zeros((len(THRESHOLDS), len(RECALL_POINTS)))
    recall = np.zeros(len(THRESHOLDS))
    for t in range(len(THRESHOLDS)):
        tp = fp = 0
        rc, pr = [], []
        for k in order:
            if ignored[t, k]:
                pass
            elif matched[t, k]:
                tp += 1
            else:
                fp += 1
            rc.append(tp / positives)
            pr.append(tp / (fp + tp + np.spacing(1)))
        recall[t] = rc[-1] if rc else 0.0
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        for r, point in enumerate(RECALL_POINTS):
            i = int(np.searchsorted(rc, point, side="left"))
            if i >= len(pr):
                break
            precision[t, r] = pr[i]
    return precision, recall


def densepose_ap(coco: CocoGroundTruth, detections: list[Instances], geodesics: Geodesics) -> dict[str, float | None]:
    """The AP / AR metrics (same keys as `APResult.metrics`) from the loops above; detections ranked."""
    gps_tables = gps(coco, detections, geodesics)
    mask_tables, box_tables = overlaps(coco, detections)
    out: dict[str, float | None] = {}
    for mode in MODES:
        for area_name, area in AREAS.items():
            scores: list[float] = []
            matched, ignored = [], []
            positives = 0
            for i, dets in enumerate(detections):
                g0, g1 = int(coco.gt_start[i]), int(coco.gt_start[i + 1])
                if mode == "gps":
                    sim = gps_tables[i]
                elif mode == "iou":
                    sim = mask_tables[i]
                else:
                    sim = np.sqrt(mask_tables[i] * gps_tables[i])
                det_area = [float(b[2] * b[3]) for b in dets.boxes]
                m, ig = evaluate_image(
                    sim, box_tables[i], coco.ignore[g0:g1], coco.iscrowd[g0:g1], coco.areas[g0:g1], det_area, area
                )
                scores += [float(s) for s in dets.scores]
                matched.append(m)
                ignored.append(ig)
                positives += sum(
                    1 for g in range(g0, g1) if not (coco.ignore[g] or not area[0] <= coco.areas[g] <= area[1])
                )
            acc = accumulate(scores, np.concatenate(matched, axis=1), np.concatenate(ignored, axis=1), positives)
            for kind in ("ap", "ar"):
                for suffix, t in (("", None), ("50", 0), ("75", 5)):
                    if area_name != "all" and suffix:
                        continue
                    key = f"{mode}_{kind}{suffix if area_name == 'all' else area_name[0]}"
                    if acc is None:
                        out[key] = None
                        continue
                    table = acc[0] if kind == "ap" else acc[1]
                    out[key] = 100.0 * float(np.mean(table if t is None else table[t]))
    return out


def point_metrics(
    images: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    geodesics: Geodesics,
    *,
    epsilon_m: float,
    windows_px: tuple[int, ...],
    cm: tuple[float, ...],
) -> tuple[list[float], list[float], list[int]]:
    """Per point (geodesic error m, window distance px, chart) from (x, y, gt_vertex, chart, pred) per image."""
    errors, windows, charts = [], [], []
    radius = max(windows_px)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = dx**2 + dy**2 <= radius**2
    dx, dy = dx[disc], dy[disc]
    for x, y, gt_vertex, chart, pred in images:
        height, width = pred.shape
        for px, py, v, c in zip(x.tolist(), y.tolist(), gt_vertex.tolist(), chart.tolist(), strict=True):
            if v < 0:
                continue
            u = int(pred[py, px])
            errors.append(_distance(geodesics, v, u) if u >= 0 else math.inf)
            # every pixel q of the disc around p: does it predict a vertex within ε of v? keep the nearest.
            qx, qy = px + dx, py + dy
            inside = (qx >= 0) & (qx < width) & (qy >= 0) & (qy < height)
            qx, qy = qx[inside], qy[inside]
            w = pred[qy, qx]
            hit = w >= 0
            hit[hit] = geodesics.pair(np.full(int(hit.sum()), v), w[hit]) <= epsilon_m
            found = np.sqrt((qx[hit] - px) ** 2 + (qy[hit] - py) ** 2)
            windows.append(float(found.min()) if len(found) else math.inf)
            charts.append(int(c))
    return errors, windows, charts


def temporal(
    frames: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]], k: int, geodesics: Geodesics, tau_m: float
) -> tuple[int, int]:
    """(matches, pixels) over the frame pairs (t, t + k) of one sequence of (gt vertex, gt person, pred) frames."""
    matches = total = 0
    for t in range(len(frames) - k):
        gt_a, person_a, pred_a = frames[t]
        gt_b, person_b, pred_b = frames[t + k]
        where: dict[tuple[int, int], tuple[int, int]] = {}
        for y in range(gt_b.shape[0]):
            for x in range(gt_b.shape[1]):
                if gt_b[y, x] >= 0:
                    key = (int(person_b[y, x]) if person_b is not None else -1, int(gt_b[y, x]))
                    where.setdefault(key, (y, x))
        for y in range(gt_a.shape[0]):
            for x in range(gt_a.shape[1]):
                if gt_a[y, x] < 0:
                    continue
                key = (int(person_a[y, x]) if person_a is not None else -1, int(gt_a[y, x]))
                if key not in where:
                    continue
                total += 1
                qy, qx = where[key]
                u, w = int(pred_a[y, x]), int(pred_b[qy, qx])
                if u >= 0 and w >= 0 and _distance(geodesics, u, w) <= tau_m:
                    matches += 1
    return matches, total


__all__ = ["accumulate", "densepose_ap", "evaluate_image", "gps", "overlaps", "point_metrics", "temporal"]
