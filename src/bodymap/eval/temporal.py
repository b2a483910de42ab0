"""Temporal consistency (BodyMap, Ianina et al. CVPR 2022, Sec. 4.4 and Table 4): do the model's correspondences
follow the body through a video?

BodyMap counts "the percentage of positive correspondence matches between the current frame and a frame in the
future" for visible vertices. Here, for frames a and b = a + k of a sequence and every GT pixel p of a person P in
frame a whose surface point (its GT vertex g) the ground truth of b also shows:

- the model says p shows vertex u = pred_a(p);
- where does the model say u is in frame b? At the pixels of P in b that predict the vertex nearest to u among
  everything it predicts on P there (their centroid), provided that vertex is within τ (`tau_m`) of u;
- the true motion says p's surface point is at the pixels of P in b whose GT vertex is g (the renderer's exact
  correspondences).

The pair is a positive match when those two places are within δ pixels, δ = `window_px` × h / H for a person h
pixels tall in frame b (H = `reference_height_px`, as the scaled window metric). The metric is the percentage of
positive matches over all such pixels of all frame pairs k apart of all sequences. Background at p, no prediction
near u in b, or a place farther than δ are misses.

So stability alone is not rewarded: a constant map says u is at the centre of P in every frame and random maps put
it anywhere (both score about the share of pixels within δ of one spot); the ground truth scores 100, and so does
any map with a fixed surface offset (the model's place of u moves with the body), while an offset drawn afresh every
frame does not. tests/test_eval_metrics.py checks all of these.

People are told apart by the GT `person` map, whose ids must name the same person throughout a sequence (without
it, a frame is taken to show one person).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bodymap.eval.locate import PixelGroups, nearest_member, person_heights, person_labels
from bodymap.log import progress
from bodymap.template.geodesic import Geodesics

Frame = tuple[np.ndarray, np.ndarray | None, np.ndarray]  # (gt vertex, gt person or None, predicted vertex)


@dataclass(frozen=True)
class _Person:
    """One person in one frame: GT pixels grouped by GT vertex, and where the prediction puts each template vertex."""

    pixels: np.ndarray  # [N] flat GT pixels of the person (raster order)
    gt: PixelGroups  # those pixels by GT vertex
    predicted: np.ndarray  # [N] predicted vertex at each of them (-1 background)
    place: np.ndarray  # [V, 2] float64 (x, y) where the model puts each vertex on this person (nan: nowhere near)
    height: int


def _people(frame: Frame, geodesics: Geodesics, tau_m: float) -> dict[int, _Person]:
    gt, person, pred = frame
    labels = person_labels(gt, person)
    width = gt.shape[1]
    out = {}
    for k, height in person_heights(labels).items():
        pixels = np.flatnonzero(labels.ravel() == k)
        predicted = pred.ravel()[pixels]
        place = np.full((geodesics.num_vertices, 2), np.nan)
        fg = predicted >= 0
        if fg.any():
            shown = PixelGroups.of(predicted[fg], pixels[fg], width)
            nearest, distance = nearest_member(geodesics, shown.values)
            near = distance <= tau_m
            place[near] = shown.centroids()[nearest[near]]
        out[k] = _Person(pixels, PixelGroups.of(gt.ravel()[pixels], pixels, width), predicted, place, height)
    return out


def frame_pair_matches(
    a: dict[int, _Person], b: dict[int, _Person], *, window_px: float, reference_height_px: float
) -> tuple[int, int]:
    """(positive matches, pixels) of one frame pair, from `_people` of both frames."""
    matches = total = 0
    for k, pa in a.items():
        pb = b.get(k)
        if pb is None:
            continue
        group = pb.gt.find(pa.gt.values)  # each GT vertex of a, among b's
        where = np.repeat(group, np.diff(pa.gt.start))  # per pixel of a, in pa.gt's order
        u = pa.predicted[np.searchsorted(pa.pixels, pa.gt.pixels)]
        visible = where >= 0
        total += int(visible.sum())
        place = np.full((len(u), 2), np.nan)
        place[u >= 0] = pb.place[u[u >= 0]]
        ok = visible & ~np.isnan(place[:, 0])
        distance = pb.gt.distance(place[ok, 0], place[ok, 1], where[ok])
        matches += int(np.sum(distance <= window_px * pb.height / reference_height_px))
    return matches, total


def temporal_consistency(
    sequences: dict[str, int],
    load: Callable[[str, int], Frame],
    *,
    intervals: tuple[int, ...],
    geodesics: Geodesics,
    tau_m: float,
    window_px: float,
    reference_height_px: float = 1024.0,
) -> dict[int, tuple[int, int]]:
    """(positive matches, pixels) per interval k over all sequences (see the module docstring).

    Args:
        sequences: sequence name -> number of frames.
        load: (sequence, frame index) -> Frame; each frame is loaded once.
        tau_m: how far (geodesically) the model's nearest prediction in frame b may be from u.
        window_px: δ at a person `reference_height_px` pixels tall.
    """
    counts = {k: [0, 0] for k in intervals}
    for name, count in sequences.items():
        frames: dict[int, dict[int, _Person]] = {}
        for t in progress(range(count), f"temporal {name}", logger=None):
            frames[t] = _people(load(name, t), geodesics, tau_m)
            for k in intervals:
                if t - k >= 0:
                    m, n = frame_pair_matches(
                        frames[t - k], frames[t], window_px=window_px, reference_height_px=reference_height_px
                    )
                    counts[k][0] += m
                    counts[k][1] += n
            oldest = t - max(intervals)
            frames.pop(oldest, None)
    return {k: (m, n) for k, (m, n) in counts.items()}


def temporal_metrics(counts: dict[int, tuple[int, int]]) -> dict[str, float | None]:
    """`temporal_k<k>` in percent (None when no frame pair is k frames apart, or no pixel stays visible)."""
    return {f"temporal_k{k}": (100.0 * m / n if n else None) for k, (m, n) in counts.items()}


__all__ = ["frame_pair_matches", "temporal_consistency", "temporal_metrics"]
