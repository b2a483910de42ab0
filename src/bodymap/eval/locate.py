"""Where a template vertex lies in an image: the geometry shared by the window and temporal metrics.

A dense vertex map (ground truth or prediction) shows each of its pixels' vertices at that pixel. Two questions
recur: "which of the vertices this map shows is nearest (geodesically) to vertex u?" (`nearest_member`, one [V]
table per map and person, so every query is a lookup) and "how far is an image position from the pixels showing a
given vertex?" (`PixelGroups.distance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodymap.template.geodesic import Geodesics

_ROWS = 256  # geodesic rows read at once in nearest_member ([256, V] float32: 14 MB on Anny)
_CANDIDATES = 4_000_000  # (query, pixel) pairs per chunk in PixelGroups.distance, to bound memory


def nearest_member(geodesics: Geodesics, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every template vertex v, the member nearest to v geodesically.

    Args:
        members: [M] int vertex ids (M >= 1).
    Returns:
        (index [V] int64 into `members` (the lowest index on ties), distance [V] float32 metres).
    """
    members = np.asarray(members, np.int64)
    best = np.full(geodesics.num_vertices, np.inf, np.float32)
    index = np.zeros(geodesics.num_vertices, np.int64)
    for start in range(0, len(members), _ROWS):
        rows = geodesics.rows(members[start : start + _ROWS])  # [m, V]
        arg = np.argmin(rows, axis=0)
        value = rows[arg, np.arange(rows.shape[1])]
        better = value < best  # strict: earlier members win ties
        best[better] = value[better]
        index[better] = start + arg[better]
    return index, best


@dataclass(frozen=True)
class PixelGroups:
    """The pixels of a map grouped by the vertex they show.

    Attributes:
        values: [K] int sorted distinct vertex ids.
        start: [K + 1] int64; the pixels of values[k] are pixels[start[k]:start[k + 1]].
        pixels: [N] int64 flat pixel indices, grouped by vertex (raster order inside a group).
        width: image width, to turn flat indices into (x, y).
    """

    values: np.ndarray
    start: np.ndarray
    pixels: np.ndarray
    width: int

    @classmethod
    def of(cls, vertex: np.ndarray, pixels: np.ndarray, width: int) -> PixelGroups:
        """Group pixels ([N] flat indices, raster order) by their vertex ([N] int >= 0)."""
        order = np.argsort(vertex, kind="stable")
        values, counts = np.unique(vertex[order], return_counts=True)
        return cls(values, np.concatenate([[0], np.cumsum(counts)]), pixels[order], width)

    def __len__(self) -> int:
        return len(self.values)

    def find(self, vertex: np.ndarray) -> np.ndarray:
        """Group index of each vertex id in [N], -1 where no pixel shows it."""
        if len(self.values) == 0:
            return np.full(len(vertex), -1, np.int64)
        at = np.minimum(np.searchsorted(self.values, vertex), len(self.values) - 1)
        return np.where(self.values[at] == vertex, at, -1)

    def centroids(self) -> np.ndarray:
        """[K, 2] float64 mean (x, y) of each group's pixels."""
        y, x = np.divmod(self.pixels, self.width)
        k = len(self.values)
        group = np.repeat(np.arange(k), np.diff(self.start))
        sums = np.stack([np.bincount(group, x, k), np.bincount(group, y, k)], axis=1)
        return sums / np.diff(self.start)[:, None]

    def distance(self, x: np.ndarray, y: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Distance in pixels from each query position (x, y [N] float) to the nearest pixel of its group ([N] int
        >= 0). Pixel positions are integer indices, so integer queries give square roots of integers."""
        counts = self.start[group + 1] - self.start[group]
        cum = np.concatenate([[0], np.cumsum(counts)])
        best = np.full(len(group), np.inf)
        lo = 0
        while lo < len(group):
            hi = max(lo + 1, int(np.searchsorted(cum, cum[lo] + _CANDIDATES, side="right")) - 1)
            n = counts[lo:hi]
            owner = np.repeat(np.arange(lo, hi), n)
            member = np.repeat(self.start[group[lo:hi]] - (cum[lo:hi] - cum[lo]), n) + np.arange(cum[hi] - cum[lo])
            qy, qx = np.divmod(self.pixels[member], self.width)
            np.minimum.at(best, owner, (qx - x[owner]) ** 2 + (qy - y[owner]) ** 2)
            lo = hi
        return np.sqrt(best)


def person_labels(vertex: np.ndarray, person: np.ndarray | None) -> np.ndarray:
    """[H, W] int64 person id of every foreground pixel of a GT map, -1 elsewhere (0 for all without `person`)."""
    fg = vertex >= 0
    if person is None:
        return np.where(fg, 0, -1)
    return np.where(fg & (person >= 0), person.astype(np.int64), -1)


def pixel_footprint(vertex: np.ndarray, labels: np.ndarray, geodesics: Geodesics) -> dict[int, float]:
    """Per person, the median geodesic distance between the GT vertices of 4-adjacent pixels of that person: how
    much surface one pixel spans (0 when pixels are denser than vertices). Occlusion edges inside a person are
    outliers the median ignores."""
    a, b, who = [], [], []
    for va, vb, la, lb in (
        (vertex[:, :-1], vertex[:, 1:], labels[:, :-1], labels[:, 1:]),  # horizontal neighbours
        (vertex[:-1], vertex[1:], labels[:-1], labels[1:]),  # vertical neighbours
    ):
        same = (la == lb) & (la >= 0)
        a.append(va[same])
        b.append(vb[same])
        who.append(la[same])
    a, b, who = np.concatenate(a), np.concatenate(b), np.concatenate(who)
    d = geodesics.pair(a, b)
    return {int(k): float(np.median(d[who == k])) for k in np.unique(who)}


def person_heights(labels: np.ndarray) -> dict[int, int]:
    """Per person, the height in pixels of the box around its GT pixels."""
    out = {}
    for k in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero((labels == k).any(axis=1))
        out[int(k)] = int(rows[-1] - rows[0] + 1)
    return out


__all__ = ["PixelGroups", "nearest_member", "person_heights", "person_labels", "pixel_footprint"]
