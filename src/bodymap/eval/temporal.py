"""Temporal consistency (BodyMap, Sec. 4.4 and Table 4): do predictions follow the body through a video?

For frames t and t + k of one sequence, take every pixel p of frame t whose GT surface point (person, vertex) is
visible in frame t + k; q is the pixel of frame t + k showing it (the first in raster order when several do). The
pair is a match when the predictions at p and q are both foreground and within τ of each other geodesically. The
metric is the percentage of matches over all such pixels of all frame pairs (t, t + k) of all sequences.

People are told apart by the GT `person` map, whose ids must name the same person throughout a sequence (without
it, a frame is taken to show one person).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bodymap.template.geodesic import Geodesics


def correspondences(gt_a: np.ndarray, person_a: np.ndarray | None, gt_b: np.ndarray, person_b: np.ndarray | None):
    """Pixels of frame a whose GT (person, vertex) is visible in frame b, and where.

    Args:
        gt_a, gt_b: [H, W] int vertex ids (-1 background); person_a, person_b: [H, W] int or None.
    Returns:
        (p [M] flat indices into frame a, q [M] flat indices into frame b).
    """
    num = int(max(gt_a.max(initial=-1), gt_b.max(initial=-1))) + 1

    def keys(gt: np.ndarray, person: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        flat = np.flatnonzero(gt.ravel() >= 0)
        who = person.ravel()[flat].astype(np.int64) + 1 if person is not None else np.zeros(len(flat), np.int64)
        return flat, who * num + gt.ravel()[flat]

    pix_a, key_a = keys(gt_a, person_a)
    pix_b, key_b = keys(gt_b, person_b)
    unique_b, first = np.unique(key_b, return_index=True)  # first occurrence = first in raster order
    if len(unique_b) == 0:
        return pix_a[:0], pix_b[:0]
    at = np.minimum(np.searchsorted(unique_b, key_a), len(unique_b) - 1)
    seen = unique_b[at] == key_a
    return pix_a[seen], pix_b[first[at[seen]]]


def frame_pair_matches(
    gt_a: np.ndarray,
    person_a: np.ndarray | None,
    pred_a: np.ndarray,
    gt_b: np.ndarray,
    person_b: np.ndarray | None,
    pred_b: np.ndarray,
    geodesics: Geodesics,
    tau_m: float,
) -> tuple[int, int]:
    """(matches, pixels) of one frame pair; pred_a, pred_b: [H, W] int predicted vertices (-1 background)."""
    p, q = correspondences(gt_a, person_a, gt_b, person_b)
    u, v = pred_a.ravel()[p], pred_b.ravel()[q]
    ok = (u >= 0) & (v >= 0)
    close = geodesics.pair(u[ok], v[ok]) <= tau_m
    return int(close.sum()), len(p)


Frame = tuple[np.ndarray, np.ndarray | None, np.ndarray]  # (gt vertex, gt person or None, predicted vertex)


def temporal_consistency(
    sequences: dict[str, int],
    load: Callable[[str, int], Frame],
    *,
    intervals: tuple[int, ...],
    geodesics: Geodesics,
    tau_m: float,
) -> dict[int, tuple[int, int]]:
    """(matches, pixels) per interval k over all sequences.

    Args:
        sequences: sequence name -> number of frames.
        load: (sequence, frame index) -> Frame; called at most twice per frame pair, cache it as needed.
    """
    out = {}
    for k in intervals:
        matches = total = 0
        for name, count in sequences.items():
            for t in range(count - k):
                m, n = frame_pair_matches(*load(name, t), *load(name, t + k), geodesics, tau_m)
                matches += m
                total += n
        out[k] = (matches, total)
    return out


def temporal_metrics(counts: dict[int, tuple[int, int]]) -> dict[str, float | None]:
    """`temporal_k<k>` in percent (None when no frame pair is k frames apart, or no pixel stays visible)."""
    return {f"temporal_k{k}": (100.0 * m / n if n else None) for k, (m, n) in counts.items()}


__all__ = ["correspondences", "frame_pair_matches", "temporal_consistency", "temporal_metrics"]
