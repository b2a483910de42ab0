"""DensePose AP / AR in the three modes GPS, GPSm and mask IoU, with detectron2's semantics, vectorised.

Follows `DensePoseCocoEval` (detectron2 `projects/DensePose/densepose/evaluation/densepose_coco_evaluation.py`,
CSE branch) step by step:

- Detections of an image are sorted by score (stable) and cut to `max_detections` (20).
- GPS(d, g) = mean over g's points of exp(-dist^2 / (2 κ^2)), dist the geodesic distance between the GT vertex and
  the vertex the detection predicts at the point; points at `int(dp * size / 255 + gt corner - det corner)` outside
  the detection's `int(w) x int(h)` grid, or on its background, count 0. Ignored GTs (no `dp_x`) get 0.
- Mask IoU: pycocotools IoU of the detection's foreground and the GT mask (see `groundtruth.gt_mask_rle`), both
  placed on the image at the integer box corner. GPSm = sqrt(GPS * mask IoU).
- Matching, per image and area range, greedy in score order at thresholds .50:.05:.95: a GT matched already (and not
  crowd) is skipped; once a detection holds a non-ignored GT it cannot move to an ignored one; ties go to the later
  GT; similarity 0 never matches. Then the 0.8 pass: a detection unmatched at the last threshold takes the free GT
  of largest box IoU >= 0.8 (ties: later GT); its ignore flag becomes that GT's at every threshold, and if the GT is
  ignored the detection counts as matched at the last threshold. Detections of an image whose GTs are all ignored
  are ignored; unmatched detections whose box area is outside the range are ignored.
- Accumulation as COCO: 101 recall points, interpolated precision; AP / AR are means over thresholds, in percent.
  A value is None when the area range has no non-ignored GT (COCO's -1).

Everything is vectorised over the set: GPS over all (detection, GT, point) triples at once, the greedy matching over
images x area ranges x modes x thresholds at once (loops only over detection and GT slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from bodymap.eval.groundtruth import CocoGroundTruth, box_mask_on_image
from bodymap.eval.predictions import Instances
from bodymap.template.geodesic import Geodesics

# np.linspace, not arange: the same floats as detectron2, so a similarity equal to a threshold compares the same.
THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREAS: dict[str, tuple[float, float]] = {"all": (0.0, 1e5**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}
MODES = ("gps", "gpsm", "iou")
BOX_IOU_PASS = 0.8
_POINT_CHUNK = 4_000_000  # (detection, point) pairs per GPS chunk, to bound memory on large sets


@dataclass
class Similarities:
    """Per image, for its ranked detections (rows) and its GTs in file order (columns): gps, mask_iou, box_iou
    [D, G] float64 each."""

    gps: list[np.ndarray]
    mask_iou: list[np.ndarray]
    box_iou: list[np.ndarray]

    def mode(self, name: str, i: int) -> np.ndarray:
        if name == "gps":
            return self.gps[i]
        if name == "iou":
            return self.mask_iou[i]
        return np.sqrt(self.mask_iou[i] * self.gps[i])


def gps_matrices(coco: CocoGroundTruth, detections: list[Instances], geodesics: Geodesics) -> list[np.ndarray]:
    """GPS of every (detection, GT) pair of every image, all points of the set in a few numpy passes.

    Args:
        coco: the ground truth; detections: per image (coco order) the ranked detections.
    Returns:
        per image [D, G] float64 (0 for ignored GTs and GTs without points).
    """
    n_images = coco.num_images
    det_count = np.array([len(d) for d in detections], np.int64)
    det_start = np.concatenate([[0], np.cumsum(det_count)])
    out = [np.zeros((det_count[i], coco.gt_start[i + 1] - coco.gt_start[i])) for i in range(n_images)]
    if det_start[-1] == 0 or coco.num_points == 0:
        return out
    boxes = np.concatenate([d.boxes for d in detections if len(d)])
    grids = [m for d in detections for m in d.maps]
    grid_w = np.array([g.shape[1] for g in grids], np.int64)
    grid_start = np.concatenate([[0], np.cumsum([g.size for g in grids])])[:-1]
    buffer = np.concatenate([g.ravel() for g in grids]).astype(np.int32)
    # detectron2 takes int() of the box size (truncation) for the grid it tests points against.
    det_w, det_h = np.trunc(boxes[:, 2]).astype(np.int64), np.trunc(boxes[:, 3]).astype(np.int64)

    gt_image = np.repeat(np.arange(n_images), np.diff(coco.gt_start))
    npts = np.diff(coco.pt_start)
    scored = np.flatnonzero(~coco.ignore & (npts > 0) & (det_count[gt_image] > 0))
    # pairs (gt, det): every scored GT against every detection of its image
    per_gt = det_count[gt_image[scored]]
    pair_gt = np.repeat(scored, per_gt)
    pair_det = det_start[gt_image[pair_gt]] + np.arange(len(pair_gt)) - np.repeat(np.cumsum(per_gt) - per_gt, per_gt)
    ax, ay = coco.point_positions  # image position of each point: dp * size / 255 + corner

    pair_pts = npts[pair_gt]
    cum = np.concatenate([[0], np.cumsum(pair_pts)])
    sums = np.zeros(len(pair_gt))
    lo = 0
    while lo < len(pair_gt):
        # pairs lo:hi hold at most _POINT_CHUNK points (at least one pair)
        hi = max(lo + 1, int(np.searchsorted(cum, cum[lo] + _POINT_CHUNK, side="right")) - 1)
        counts = pair_pts[lo:hi]
        which = np.repeat(np.arange(lo, hi), counts)  # the pair of each (pair, point) element
        pt = np.repeat(coco.pt_start[pair_gt[lo:hi]] - (cum[lo:hi] - cum[lo]), counts) + np.arange(cum[hi] - cum[lo])
        det = pair_det[which]
        px = (ax[pt] - boxes[det, 0]).astype(np.int64)  # astype truncates toward zero, like detectron2's int cast
        py = (ay[pt] - boxes[det, 1]).astype(np.int64)
        inside = (px >= 0) & (py >= 0) & (px < det_w[det]) & (py < det_h[det])
        pred = np.full(len(pt), -1, np.int32)
        pred[inside] = buffer[grid_start[det[inside]] + py[inside] * grid_w[det[inside]] + px[inside]]
        gt_vertex = coco.vertex[pt]
        ok = (pred >= 0) & (gt_vertex >= 0)
        dist = geodesics.pair(gt_vertex[ok], pred[ok]).astype(np.float64)
        similarity = np.exp(-(dist**2) / (2 * coco.kappa[pt[ok]] ** 2))
        sums[lo:hi] = np.bincount(which[ok] - lo, weights=similarity, minlength=hi - lo)
        lo = hi
    gps = sums / np.maximum(pair_pts, 1)
    image = gt_image[pair_gt]
    column = pair_gt - coco.gt_start[image]
    row = pair_det - det_start[image]
    for i in np.unique(image):
        sel = image == i
        out[i][row[sel], column[sel]] = gps[sel]
    return out


def overlap_matrices(coco: CocoGroundTruth, detections: list[Instances]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Mask IoU and box IoU [D, G] per image, by pycocotools (crowd GTs use intersection over detection area)."""
    mask_iou, box_iou = [], []
    for i, dets in enumerate(detections):
        g0, g1 = coco.gt_start[i], coco.gt_start[i + 1]
        if len(dets) == 0 or g1 == g0:
            mask_iou.append(np.zeros((len(dets), g1 - g0)))
            box_iou.append(np.zeros((len(dets), g1 - g0)))
            continue
        height, width = int(coco.heights[i]), int(coco.widths[i])
        masks = np.zeros((height, width, len(dets)), np.uint8, order="F")
        for k in range(len(dets)):
            box_mask_on_image(dets.maps[k] >= 0, dets.boxes[k], height, width, out=masks[:, :, k])
        crowd = coco.iscrowd[g0:g1].astype(np.uint8).tolist()
        mask_iou.append(np.asarray(mask_utils.iou(mask_utils.encode(masks), coco.rles[g0:g1], crowd), np.float64))
        box_iou.append(np.asarray(mask_utils.iou(dets.boxes, coco.boxes[g0:g1], crowd), np.float64))
    return mask_iou, box_iou


def similarities(coco: CocoGroundTruth, detections: list[Instances], geodesics: Geodesics) -> Similarities:
    """All three similarity matrices per image; `detections` must be ranked (`Instances.ranked`)."""
    mask_iou, box_iou = overlap_matrices(coco, detections)
    return Similarities(gps_matrices(coco, detections, geodesics), mask_iou, box_iou)


@dataclass
class Matches:
    """Greedy matching of one mode and area range, detections of all images in image order then rank order.

    scores: [N] float64; matched, ignored: [T, N] bool; positives: number of non-ignored GTs.
    """

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    positives: int


def match(coco: CocoGroundTruth, detections: list[Instances], sims: Similarities) -> dict[tuple[str, str], Matches]:
    """detectron2's `evaluateImg` for every image, area range and mode at once. Returns (mode, area) -> Matches."""
    n_img, n_t = coco.num_images, len(THRESHOLDS)
    n_det = np.array([len(d) for d in detections], np.int64)
    n_gt = np.diff(coco.gt_start)
    d_max, g_max = int(n_det.max(initial=0)), int(n_gt.max(initial=0))
    areas, modes = list(AREAS.values()), list(MODES)
    n_a, n_m = len(areas), len(modes)

    # GT slots per image, reordered per area range so ignored GTs come last (stable), as detectron2 does.
    slot = np.arange(g_max)
    g_valid = slot[None, :] < n_gt[:, None]  # [I, G]
    g_index = np.where(g_valid, coco.gt_start[:-1, None] + slot[None, :], 0)  # [I, G] annotation index
    area_g = coco.areas[g_index] if len(coco.areas) else np.zeros(g_index.shape)
    ignore_g = coco.ignore[g_index] if len(coco.ignore) else np.zeros(g_index.shape, bool)
    crowd_g = coco.iscrowd[g_index] if len(coco.iscrowd) else np.zeros(g_index.shape, bool)
    gt_ig = np.stack([ignore_g | (area_g < lo) | (area_g > hi) for lo, hi in areas], axis=1)  # [I, A, G]
    order = np.argsort(np.where(g_valid[:, None, :], gt_ig, True), axis=2, kind="stable")  # invalid slots last
    gt_ig = np.take_along_axis(gt_ig, order, axis=2)
    g_valid_a = np.take_along_axis(np.broadcast_to(g_valid[:, None, :], order.shape), order, axis=2)
    crowd_a = np.take_along_axis(np.broadcast_to(crowd_g[:, None, :], order.shape), order, axis=2)

    # Similarity tensors [I, A, M, D, G] in each area's GT order, and box IoU [I, A, D, G].
    sim = np.zeros((n_img, n_m, d_max, g_max))
    box = np.zeros((n_img, d_max, g_max))
    for i in range(n_img):
        d, g = n_det[i], n_gt[i]
        if d and g:
            for m, mode in enumerate(modes):
                sim[i, m, :d, :g] = sims.mode(mode, i)
            box[i, :d, :g] = sims.box_iou[i]
    idx = order[:, :, None, None, :]
    sim = np.take_along_axis(sim[:, None], np.broadcast_to(idx, (n_img, n_a, n_m, d_max, g_max)), axis=4)
    box = np.take_along_axis(box[:, None], np.broadcast_to(order[:, :, None, :], (n_img, n_a, d_max, g_max)), axis=3)

    # Batch b = (image, area, mode); state per threshold.
    b_shape = (n_img, n_a, n_m)
    n_b = n_img * n_a * n_m
    sim = sim.reshape(n_b, d_max, g_max)
    box = np.broadcast_to(box[:, :, None], (*b_shape, d_max, g_max)).reshape(n_b, d_max, g_max)
    gig = np.broadcast_to(gt_ig[:, :, None], (*b_shape, g_max)).reshape(n_b, g_max)
    gval = np.broadcast_to(g_valid_a[:, :, None], (*b_shape, g_max)).reshape(n_b, g_max)
    crowd = np.broadcast_to(crowd_a[:, :, None], (*b_shape, g_max)).reshape(n_b, g_max)
    dval = np.broadcast_to((np.arange(d_max)[None, :] < n_det[:, None])[:, None, None], (*b_shape, d_max))
    dval = dval.reshape(n_b, d_max)
    all_ig = ~np.any(gval & ~gig, axis=1)  # every GT ignored, or none at all (np.all of nothing)

    gtm = np.zeros((n_b, n_t, g_max), bool)
    dtm = np.zeros((n_b, n_t, d_max), bool)
    dtig = np.broadcast_to(all_ig[:, None, None], (n_b, n_t, d_max)).copy()
    start = np.minimum(THRESHOLDS, 1 - 1e-10)
    rows = np.arange(n_b)[:, None]
    for d in range(d_max):
        best = np.broadcast_to(start, (n_b, n_t)).copy()
        m = np.full((n_b, n_t), -1)
        m_ig = np.zeros((n_b, n_t), bool)
        stopped = np.zeros((n_b, n_t), bool)
        for g in range(g_max):
            free = gval[:, g, None] & ~(gtm[:, :, g] & ~crowd[:, g, None]) & ~stopped
            stop = free & (m >= 0) & ~m_ig & gig[:, g, None]
            stopped |= stop
            s = sim[:, d, g][:, None]
            take = free & ~stop & (s >= best) & (s != 0.0)
            best = np.where(take, s, best)
            m = np.where(take, g, m)
            m_ig = np.where(take, gig[:, g, None], m_ig)
        hit = (m >= 0) & dval[:, d, None]
        dtig[:, :, d] = np.where(hit, m_ig, dtig[:, :, d])
        dtm[:, :, d] = hit
        b, t = np.nonzero(hit)
        gtm[b, t, m[b, t]] = True

    # The 0.8 box-IoU pass at the last threshold (detectron2 runs it with the loop's final threshold index).
    last = n_t - 1
    for d in range(d_max):
        need = ~dtm[:, last, d] & dval[:, d]
        best = np.full(n_b, BOX_IOU_PASS)
        m = np.full(n_b, -1)
        for g in range(g_max):
            free = gval[:, g] & ~(gtm[:, last, g] & ~crowd[:, g])
            take = free & (box[:, d, g] >= best)
            best = np.where(take, box[:, d, g], best)
            m = np.where(take, g, m)
        hit = need & (m >= 0)
        hit_ig = np.where(hit, gig[rows[:, 0], np.maximum(m, 0)], False)
        dtig[hit, :, d] = hit_ig[hit, None]
        dtm[hit_ig, last, d] = True
        gtm[np.flatnonzero(hit_ig), last, m[hit_ig]] = True

    # Unmatched detections outside the area range are ignored.
    det_area = np.zeros((n_img, d_max))
    for i in range(n_img):
        if n_det[i]:
            det_area[i, : n_det[i]] = detections[i].boxes[:, 2] * detections[i].boxes[:, 3]
    outside = np.stack([(det_area < lo) | (det_area > hi) for lo, hi in areas], axis=1)  # [I, A, D]
    outside = np.broadcast_to(outside[:, :, None], (*b_shape, d_max)).reshape(n_b, d_max)
    dtig |= ~dtm & outside[:, None, :]

    scores = np.zeros((n_img, d_max))
    for i in range(n_img):
        scores[i, : n_det[i]] = detections[i].scores
    result = {}
    dtm, dtig = dtm.reshape(*b_shape, n_t, d_max), dtig.reshape(*b_shape, n_t, d_max)
    valid = np.arange(d_max)[None, :] < n_det[:, None]  # [I, D]
    for a, area in enumerate(AREAS):
        positives = int(np.sum(~gt_ig[:, a] & g_valid_a[:, a]))
        for m, mode in enumerate(modes):
            result[mode, area] = Matches(
                scores=scores[valid],
                matched=dtm[:, a, m].transpose(1, 0, 2)[:, valid],
                ignored=dtig[:, a, m].transpose(1, 0, 2)[:, valid],
                positives=positives,
            )
    return result


def accumulate(matches: Matches) -> tuple[np.ndarray, np.ndarray] | None:
    """COCO accumulation: (precision [T, R] at the 101 recall points, recall [T]); None without positives."""
    if matches.positives == 0:
        return None
    order = np.argsort(-matches.scores, kind="mergesort")
    matched, ignored = matches.matched[:, order], matches.ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    n = tp.shape[1]
    recall_curve = tp / matches.positives
    precision_curve = tp / (fp + tp + np.spacing(1))
    # interpolated precision: the best precision at any higher recall
    precision_curve = np.maximum.accumulate(precision_curve[:, ::-1], axis=1)[:, ::-1]
    precision = np.zeros((len(THRESHOLDS), len(RECALL_POINTS)))
    for t in range(len(THRESHOLDS)):
        at = np.searchsorted(recall_curve[t], RECALL_POINTS, side="left")
        reached = at < n
        precision[t, reached] = precision_curve[t, at[reached]]
    recall = recall_curve[:, -1] if n else np.zeros(len(THRESHOLDS))
    return precision, recall


@dataclass
class APResult:
    """precision[(mode, area)]: [T, R] or None; recall[(mode, area)]: [T] or None; sims: the similarity matrices."""

    precision: dict[tuple[str, str], np.ndarray | None]
    recall: dict[tuple[str, str], np.ndarray | None]
    sims: Similarities

    def metrics(self) -> dict[str, float | None]:
        """`<mode>_ap`, `_ap50`, `_ap75`, `_apm`, `_apl`, `_ar`, `_ar50`, `_ar75`, `_arm`, `_arl` in percent."""
        out: dict[str, float | None] = {}
        t50 = int(np.flatnonzero(np.abs(THRESHOLDS - 0.5) < 0.001)[0])
        t75 = int(np.flatnonzero(np.abs(THRESHOLDS - 0.75) < 0.001)[0])
        for mode in MODES:
            for kind, table in (("ap", self.precision), ("ar", self.recall)):
                for suffix, area, t in (
                    ("", "all", None),
                    ("50", "all", t50),
                    ("75", "all", t75),
                    ("m", "medium", None),
                    ("l", "large", None),
                ):
                    value = table[mode, area]
                    out[f"{mode}_{kind}{suffix}"] = (
                        None if value is None else 100.0 * float(np.mean(value if t is None else value[t]))
                    )
        return out


def evaluate_ap(coco: CocoGroundTruth, detections: list[Instances], geodesics: Geodesics) -> APResult:
    """DensePose AP / AR of ranked detections (one `Instances` per COCO image, in `coco` order)."""
    sims = similarities(coco, detections, geodesics)
    matches = match(coco, detections, sims)
    precision, recall = {}, {}
    for key, value in matches.items():
        acc = accumulate(value)
        precision[key], recall[key] = (None, None) if acc is None else acc
    return APResult(precision, recall, sims)


__all__ = [
    "AREAS",
    "MODES",
    "RECALL_POINTS",
    "THRESHOLDS",
    "APResult",
    "Matches",
    "Similarities",
    "accumulate",
    "evaluate_ap",
    "gps_matrices",
    "match",
    "overlap_matrices",
    "similarities",
]
