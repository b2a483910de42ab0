"""Literal, loop-by-loop implementations of the evaluator's definitions, for verification only.

Slow on purpose: one detection, one GT, one point, one threshold, one pixel at a time, written to read like the
definitions (the module docstrings of `bodymap.eval.densepose_ap`, `accuracy` and `temporal`, and detectron2's
`DensePoseCocoEval`) rather than to be fast. The tests and `benchmarks/evaluate.py` check that the vectorised
`bodymap.eval` gives the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

from bodymap.eval.densepose_ap import AREAS, MODES, RECALL_POINTS, THRESHOLDS
from bodymap.eval.groundtruth import CocoGroundTruth, box_mask_on_image
from bodymap.eval.predictions import Instances
from bodymap.template.geodesic import Geodesics


# -------------------------------------------------------------------------------------------- DensePose AP / AR
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


# ------------------------------------------------------------------------------------------- window and temporal
def _people(gt: np.ndarray, person: np.ndarray | None) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            if gt[y, x] >= 0 and (person is None or person[y, x] >= 0):
                out.setdefault(0 if person is None else int(person[y, x]), []).append((x, y))
    return out


def _footprint(gt: np.ndarray, person: np.ndarray | None, k: int, geodesics: Geodesics) -> float:
    def who(y: int, x: int) -> int:
        return -1 if gt[y, x] < 0 else (0 if person is None else int(person[y, x]))

    d = []
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            for yy, xx in ((y, x + 1), (y + 1, x)):
                if yy < gt.shape[0] and xx < gt.shape[1] and who(y, x) == k and who(yy, xx) == k:
                    d.append(float(geodesics.pair(gt[y, x], gt[yy, xx])))
    return float(np.median(d)) if d else 0.0


def _nearest_shown(u: int, shown: list[int], geodesics: Geodesics) -> tuple[int, float]:
    """The shown vertex nearest to u (lowest id on ties) and its distance."""
    row = geodesics.rows(np.array([u]))[0]
    best = min(sorted(set(shown)), key=lambda s: row[s])
    return best, float(row[best])


def window_errors(
    gt: np.ndarray, person: np.ndarray | None, pred: np.ndarray, geodesics: Geodesics, min_spacing_m: float
) -> list[float]:
    """Per GT pixel (people in id order, raster order inside), the window error in pixels (inf: a miss)."""
    out = []
    for k, pixels in sorted(_people(gt, person).items()):
        tolerance = 2.0 * max(_footprint(gt, person, k, geodesics), min_spacing_m)
        shown = [int(gt[y, x]) for x, y in pixels]
        for x, y in pixels:
            u = int(pred[y, x])
            if u < 0:
                out.append(math.inf)
                continue
            s, d = _nearest_shown(u, shown, geodesics)
            if d > tolerance:
                out.append(math.inf)
                continue
            out.append(min(math.hypot(qx - x, qy - y) for qx, qy in pixels if gt[qy, qx] == s))
    return out


def temporal_pair(a, b, geodesics: Geodesics, tau_m: float, window_px: float, reference_px: float) -> tuple[int, int]:
    """(positive matches, pixels) of one frame pair; a, b: (gt, person, pred) frames."""
    gt_a, person_a, pred_a = a
    gt_b, person_b, pred_b = b
    matches = total = 0
    people_b = _people(gt_b, person_b)
    for k, pixels in sorted(_people(gt_a, person_a).items()):
        if k not in people_b:
            continue
        in_b = people_b[k]
        rows = [y for _, y in in_b]
        delta = window_px * (max(rows) - min(rows) + 1) / reference_px
        shown_pred = [int(pred_b[y, x]) for x, y in in_b if pred_b[y, x] >= 0]
        for x, y in pixels:
            g = int(gt_a[y, x])
            truth = [(qx, qy) for qx, qy in in_b if gt_b[qy, qx] == g]
            if not truth:
                continue
            total += 1
            u = int(pred_a[y, x])
            if u < 0 or not shown_pred:
                continue
            w, d = _nearest_shown(u, shown_pred, geodesics)
            if d > tau_m:
                continue
            at = [(qx, qy) for qx, qy in in_b if pred_b[qy, qx] == w]
            cx, cy = np.mean([p[0] for p in at]), np.mean([p[1] for p in at])
            if min(math.hypot(qx - cx, qy - cy) for qx, qy in truth) <= delta:
                matches += 1
    return matches, total
