"""Per-vertex DensePose charts, chart coordinates, the left/right symmetry map and the BodyMap colour code.

All functions are pure: arrays in, arrays out, body frame (x = person's left, y = up, z = forward, metres).

Charts come from skinning: each vertex takes the (region, side) whose bones carry most of its skinning weight,
then front/back (or, for the head, right/left) from the rest-pose surface normal (or the side of the sagittal
plane). Stray islands are merged into their neighbours and the right half is made the exact mirror of the left.

Chart coordinates (U, V): each chart is a topological disk, so it gets a mean-value (Floater) parameterisation
onto the unit disk, with the chart's outer boundary pinned to the circle by arc length. With positive weights and
a convex boundary this map is continuous and injective (Tutte/Floater), so (I, U, V) identifies a vertex; the disk
is then scaled into [0, 1]^2. Right-side charts copy the UVs of their mirror vertices, so left/right charts share
one layout, as DensePose's do.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve
from scipy.spatial import cKDTree

from bodymap.densepose import CHART_FLIP, CHART_TO_PART

# (region, side) -> chart ids; pairs are (back, front); the head's pair is (right, left).
REGION_CHARTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("torso", "C"): (1, 2),
    ("hand", "R"): (3,),
    ("hand", "L"): (4,),
    ("foot", "L"): (5,),
    ("foot", "R"): (6,),
    ("upper_leg", "R"): (7, 9),
    ("upper_leg", "L"): (8, 10),
    ("lower_leg", "R"): (11, 13),
    ("lower_leg", "L"): (12, 14),
    ("upper_arm", "L"): (15, 17),
    ("upper_arm", "R"): (16, 18),
    ("lower_arm", "L"): (19, 21),
    ("lower_arm", "R"): (20, 22),
    ("head", "C"): (23, 24),
}


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals. vertices: [V, 3]; faces: [F, 3] -> [V, 3] float32."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    return normals.astype(np.float32)


def edges_of(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges [E, 2] int (sorted pairs) of a triangle mesh."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def adjacency(faces: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """Symmetric vertex adjacency [V, V] of a triangle mesh."""
    e = edges_of(faces)
    data = np.ones(len(e) * 2)
    rows = np.concatenate([e[:, 0], e[:, 1]])
    cols = np.concatenate([e[:, 1], e[:, 0]])
    return sp.csr_matrix((data, (rows, cols)), shape=(num_vertices, num_vertices))


def largest_component(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Boolean mask [V] of the vertices of the largest edge-connected component."""
    _, labels = connected_components(adjacency(faces, num_vertices), directed=False)
    return labels == np.bincount(labels).argmax()


def symmetry_map(vertices: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Mirror vertex of each vertex under x -> -x, as an involution [V] int32.

    Pairs are matched as mutual nearest neighbours; vertices on the sagittal plane map to themselves.
    Raises ValueError when the mesh is not symmetric within `tol` metres.
    """
    mirrored = vertices * np.array([-1.0, 1.0, 1.0], vertices.dtype)
    dist, sym = cKDTree(vertices).query(mirrored)
    sym = sym.astype(np.int32)
    bad = (dist > tol) | (sym[sym] != np.arange(len(vertices)))
    if bad.any():
        raise ValueError(
            f"mesh is not left/right symmetric: {int(bad.sum())} of {len(vertices)} vertices have no mirror "
            f"within {tol} m (max distance {float(dist.max()):.4g} m)"
        )
    return sym


def right_side(vertices: np.ndarray, symmetry: np.ndarray) -> np.ndarray:
    """[V] bool: vertices on the person's right (x < mirror's x); sagittal-plane vertices (own mirror) are not."""
    return (symmetry != np.arange(len(symmetry))) & (vertices[:, 0] < vertices[symmetry, 0])


def region_labels(
    bone_regions: list[tuple[str, str]], weights: np.ndarray, bone_indices: np.ndarray
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Per-vertex dominant (region, side) by summed skinning weight.

    Args:
        bone_regions: (region, side) per bone.
        weights, bone_indices: [V, S] sparse skinning of each vertex.
    Returns:
        (the list of (region, side) keys, labels [V] indexing into it).
    """
    keys = sorted(set(bone_regions))
    key_of_bone = np.array([keys.index(r) for r in bone_regions])
    scores = np.zeros((len(weights), len(keys)))
    rows = np.repeat(np.arange(len(weights)), weights.shape[1])
    np.add.at(scores, (rows, key_of_bone[bone_indices.ravel()]), weights.ravel())
    return keys, scores.argmax(axis=1)


def assign_charts(
    vertices: np.ndarray,
    faces: np.ndarray,
    region_keys: list[tuple[str, str]],
    regions: np.ndarray,
    symmetry: np.ndarray,
) -> np.ndarray:
    """DensePose chart id (1..24) per vertex from body regions, normals and the sagittal plane.

    Args:
        vertices: [V, 3] rest pose, body frame. faces: [F, 3]. regions: [V] indices into region_keys.
        symmetry: [V] mirror map (see `symmetry_map`).
    Returns:
        [V] uint8 charts with chart[symmetry[v]] == CHART_FLIP[chart[v]] off the sagittal plane.
    """
    normals = vertex_normals(vertices, faces)
    front = normals[:, 2] > 0.0
    right = right_side(vertices, symmetry)
    chart = np.zeros(len(vertices), np.uint8)
    for k, key in enumerate(region_keys):
        ids = REGION_CHARTS[key]
        sel = regions == k
        if len(ids) == 1:
            chart[sel] = ids[0]
        elif key[0] == "head":
            chart[sel] = np.where(right[sel], ids[0], ids[1])
        else:
            chart[sel] = np.where(front[sel], ids[1], ids[0])
    chart = _merge_islands(chart, faces)
    return _mirror_left_to_right(chart, vertices, symmetry)


def _merge_islands(chart: np.ndarray, faces: np.ndarray, max_rounds: int = 20) -> np.ndarray:
    """Give every connected piece of a chart but its largest to the chart most common around it."""
    chart = chart.copy()
    adj = adjacency(faces, len(chart)).tocoo()
    for _ in range(max_rounds):
        same = chart[adj.row] == chart[adj.col]
        graph = sp.csr_matrix((np.ones(same.sum()), (adj.row[same], adj.col[same])), shape=adj.shape)
        _, comp = connected_components(graph, directed=False)
        changed = False
        for c in np.unique(chart):
            comps = np.unique(comp[chart == c])
            if len(comps) <= 1:
                continue
            sizes = np.array([(comp == k).sum() for k in comps])
            for k in comps[np.argsort(sizes, kind="stable")[:-1]]:  # stable: ties keep the same piece
                members = comp == k
                border = members[adj.row] & ~members[adj.col]
                neighbour = chart[adj.col[border]]
                if len(neighbour):
                    chart[members] = np.bincount(neighbour).argmax()
                    changed = True
        if not changed:
            break
    return chart


def _mirror_left_to_right(chart: np.ndarray, vertices: np.ndarray, symmetry: np.ndarray) -> np.ndarray:
    """Make the person's right half the mirror image of the left half, chart ids flipped."""
    chart = chart.copy()
    right = right_side(vertices, symmetry)
    chart[right] = CHART_FLIP[chart[symmetry[right]]]
    return chart


def chart_parts(chart: np.ndarray) -> np.ndarray:
    """Coarse part (1..14, dp_masks order) per vertex from its chart."""
    return CHART_TO_PART[chart]


# ------------------------------------------------------------------------------------------------ chart coordinates
def _mean_value_weights(vertices: np.ndarray, faces: np.ndarray, n: int) -> sp.csr_matrix:
    """Floater's mean-value weights W[i, j] = (tan(a/2) + tan(b/2)) / |x_j - x_i| (always positive)."""
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, m = faces[:, k], faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]
        eij = vertices[j] - vertices[i]
        eim = vertices[m] - vertices[i]
        lij = np.linalg.norm(eij, axis=1) + 1e-12
        lim = np.linalg.norm(eim, axis=1) + 1e-12
        cos = np.clip((eij * eim).sum(1) / (lij * lim), -1.0, 1.0)
        half_tan = np.tan(np.arccos(cos) / 2.0)
        rows += [i, i]
        cols += [j, m]
        vals += [half_tan / lij, half_tan / lim]
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a triangle set, each as an ordered vertex array following the faces' winding."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    boundary = directed[counts[inverse.ravel()] == 1]
    nxt = dict(zip(boundary[:, 0].tolist(), boundary[:, 1].tolist(), strict=True))
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in nxt:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.array(loop))
    return loops


def chart_uv(vertices: np.ndarray, faces: np.ndarray, chart: np.ndarray, symmetry: np.ndarray) -> np.ndarray:
    """Per-vertex (U, V) in [0, 1] inside its chart (see the module docstring).

    Returns:
        [V, 2] float32.
    """
    n = len(vertices)
    uv = np.full((n, 2), np.nan)
    right = right_side(vertices, symmetry)
    for c in range(1, 25):
        members = chart == c
        # Right-side charts (all but the self-symmetric torso) are copied from their mirror below.
        if not members.any() or (CHART_FLIP[c] != c and right[members].all()):
            continue
        uv[members] = _disk_map(vertices, faces, members)
    mirror = right & (CHART_FLIP[chart] != chart)
    uv[mirror] = uv[symmetry[mirror]]
    # Vertices in no face of their own chart (single-vertex slivers): average of same-chart neighbours.
    missing = np.isnan(uv[:, 0])
    if missing.any():
        adj = adjacency(faces, n)
        for v in np.flatnonzero(missing):
            nb = adj.indices[adj.indptr[v] : adj.indptr[v + 1]]
            nb = nb[(chart[nb] == chart[v]) & ~np.isnan(uv[nb, 0])]
            uv[v] = uv[nb].mean(0) if len(nb) else 0.5
    return uv.astype(np.float32)


def _disk_map(vertices: np.ndarray, faces: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Mean-value map of one chart onto the unit disk, scaled into [0, 1]^2; NaN for vertices in no chart face."""
    idx = np.flatnonzero(members)
    local = np.full(len(vertices), -1)
    local[idx] = np.arange(len(idx))
    f = local[faces[members[faces].all(axis=1)]]
    out = np.full((len(idx), 2), np.nan)
    if len(f) == 0:
        return out
    # Only the largest face-connected piece is mapped; leftovers are treated as slivers.
    keep = largest_component(f, len(idx))
    f = f[keep[f].all(axis=1)]
    x = vertices[idx]
    loops = _boundary_loops(f)
    outer = max(loops, key=lambda lp: np.linalg.norm(x[lp] - x[np.roll(lp, -1)], axis=1).sum())
    # Start the circle at the top-most boundary vertex so layouts are reproducible and upright-ish.
    outer = np.roll(outer, -int(np.argmax(x[outer, 1])))
    seg = np.linalg.norm(x[outer] - x[np.roll(outer, -1)], axis=1)
    angle = 2.0 * np.pi * np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    fixed = np.zeros(len(idx), bool)
    fixed[outer] = True
    pos = np.zeros((len(idx), 2))
    pos[outer] = np.stack([np.sin(angle), np.cos(angle)], axis=1)
    used = np.zeros(len(idx), bool)
    used[f.ravel()] = True
    free = used & ~fixed
    w = _mean_value_weights(x, f, len(idx))
    a = sp.diags(np.asarray(w.sum(axis=1)).ravel()) - w
    a_ff = a[free][:, free].tocsc()
    rhs = -a[free][:, fixed] @ pos[fixed]
    pos[free] = np.column_stack([spsolve(a_ff, rhs[:, 0]), spsolve(a_ff, rhs[:, 1])])
    out[used] = (pos[used] + 1.0) / 2.0
    return np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------------ colour code
def colour_code(vertices: np.ndarray, search_radius: int = 4) -> np.ndarray:
    """BodyMap's per-vertex colour code (paper Sec. 3.1): a unique 24-bit RGB colour per vertex.

    Rest-pose coordinates are scaled per axis to fill 0..255 (R = x, G = y, B = z), so the code is smooth over the
    surface; vertices that round to an already-used colour take the nearest free colour within `search_radius`.

    Returns:
        [V, 3] uint8, all rows distinct.
    """
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    scaled = (vertices - lo) / np.maximum(hi - lo, 1e-9) * 255.0
    colours = np.rint(scaled).astype(np.int64)
    r = np.arange(-search_radius, search_radius + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = offsets[np.argsort(np.linalg.norm(offsets, axis=1), kind="stable")]
    used: set[int] = set()
    # Assign in order of rounding error, so well-placed vertices keep their exact colour.
    order = np.argsort(np.linalg.norm(scaled - colours, axis=1), kind="stable")
    for v in order:
        for off in offsets:
            c = colours[v] + off
            if (c < 0).any() or (c > 255).any():
                continue
            key = int(c[0]) << 16 | int(c[1]) << 8 | int(c[2])
            if key not in used:
                used.add(key)
                colours[v] = c
                break
        else:
            raise ValueError(f"no free colour within {search_radius} of vertex {v}; raise search_radius")
    return colours.astype(np.uint8)
