"""Garment and hair shells around the posed Anny body, as one fixed-topology render mesh per identity.

Paper Sec. 3.1: BodyMap's ground truth covers loose clothes and hair. Here garments are shells: tops, sleeves,
trousers and shorts are the template's own faces pushed out along the posed vertex normals by a few millimetres
(tight) to a few centimetres (loose); skirts and robes are a ring surface around the legs whose radius follows the
posed legs (so it contains them) and flares downward; hair is a shell over the scalp.

Where a pixel on them maps to (the GT): a shell point is pushed out from the body point with the same face and
barycentrics, which is also its nearest body point up to the offset's curvature effects, so shell faces carry their
template vertices like bare skin (exact and free). Eyes and tongue move rigidly with the head, so each of their
vertices carries the body vertex nearest to it in the rest pose. Skirt faces carry nothing (-1): the renderer looks
up the nearest point of the posed body surface for them (`MeshQuery.closest`).

The render mesh of an identity has one vertex layout for every pose: [Anny's full mesh | shells | skirt rings],
so a Warp BVH built once per identity is refitted per frame, and frame-to-frame flow is exact (same face, same
barycentrics, next frame's vertices).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bodymap.raycast import warp
from bodymap.render.identity import Identity

# Materials (index into an identity's material list) and GT layers (docs/formats.md).
MAT_SKIN, MAT_OTHER, MAT_TOP, MAT_BOTTOM, MAT_HAIR = 0, 1, 2, 3, 4
LAYER_SKIN, LAYER_GARMENT, LAYER_HAIR, LAYER_OTHER = 1, 2, 3, 4
TORSO, HEAD = (1, 2), (23, 24)
ARMS = tuple(range(15, 23))
LEGS = tuple(range(7, 15))
SKIRT_RINGS, SKIRT_SEGMENTS = 10, 40


_KERNELS: dict[str, object] = {}


def _normal_kernels() -> dict[str, object]:
    """Warp kernels for vertex normals (compiled once): a face loop with atomic adds, then a normalisation."""
    if not _KERNELS:
        wp = warp()

        @wp.kernel
        def accumulate(
            points: wp.array(dtype=wp.vec3), faces: wp.array(dtype=wp.int32, ndim=2), out: wp.array(dtype=wp.vec3)
        ):
            f = wp.tid()
            i, j, k = faces[f, 0], faces[f, 1], faces[f, 2]
            n = wp.cross(points[j] - points[i], points[k] - points[i])  # length = 2 x area: area weighting
            wp.atomic_add(out, i, n)
            wp.atomic_add(out, j, n)
            wp.atomic_add(out, k, n)

        @wp.kernel
        def normalise(out: wp.array(dtype=wp.vec3)):
            v = wp.tid()
            n = out[v]
            length = wp.length(n)
            if length > 1e-12:
                out[v] = n / length

        _KERNELS.update(accumulate=accumulate, normalise=normalise)
    return _KERNELS


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals [N, 3] float32 of a mesh (vertices [N, 3], faces [F, 3] int32).

    A Warp loop over faces on the CPU, ~10x faster than numpy's gathers, cross products and scatter; single
    threaded, so the sums (hence the bytes downstream) do not depend on scheduling.
    """

    wp = warp()
    kernels = _normal_kernels()
    points = wp.array(np.ascontiguousarray(vertices, np.float32), dtype=wp.vec3, device="cpu")
    tris = wp.array(np.ascontiguousarray(faces, np.int32), dtype=wp.int32, device="cpu")
    out = wp.zeros(len(vertices), dtype=wp.vec3, device="cpu")
    wp.launch(kernels["accumulate"], dim=len(faces), inputs=[points, tris, out], device="cpu")
    wp.launch(kernels["normalise"], dim=len(vertices), inputs=[out], device="cpu")
    return out.numpy()


@dataclass
class BodyParts:
    """What garment construction needs from the template and Anny's full mesh, all in the rest body frame.

    Attributes:
        full_faces: [Ff, 3] int32 Anny's full mesh (body skin, eyeballs, tongue).
        num_full: N, vertices of the full mesh.
        full_to_template: [N] int32 template vertex of each full vertex (-1 for eyes and tongue).
        template_to_full: [V] int32.
        template_faces: [F, 3] int32; rest: [V, 3] float32 rest template vertices; chart: [V] uint8; uv: [V, 2].
        landmarks: rest joint positions by COCO keypoint name ([3] float, metres).
        full_to_body: [N] int32 template vertex each full vertex maps to: itself on the skin, the nearest skin vertex
            in the rest pose for eyes and tongue.
    """

    full_faces: np.ndarray
    num_full: int
    template_to_full: np.ndarray
    template_faces: np.ndarray
    rest: np.ndarray
    chart: np.ndarray
    uv: np.ndarray
    landmarks: dict[str, np.ndarray]
    full_to_body: np.ndarray
    full_to_template: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.full_to_template = np.full(self.num_full, -1, np.int32)
        self.full_to_template[self.template_to_full] = np.arange(len(self.template_to_full), dtype=np.int32)
        assert (self.full_to_body[self.template_to_full] == np.arange(len(self.template_to_full))).all()

    def level(self, name: str) -> float:
        """Mean rest height (y) of a left/right keypoint pair, e.g. 'hip'."""
        return float((self.landmarks[f"left_{name}"][1] + self.landmarks[f"right_{name}"][1]) / 2.0)


@dataclass
class Shell:
    """Template vertices `ids` [n] pushed out by `offsets` [n] metres along the posed normals."""

    ids: np.ndarray
    offsets: np.ndarray


@dataclass
class Skirt:
    """A ring surface from `waist_y` down to `hem_y` (rest body frame) around the template vertices `source`."""

    waist_y: float
    hem_y: float
    margin: float
    flare: float
    source: np.ndarray
    waist: np.ndarray  # template vertices near the waist, whose mean gives the skirt's axis


def _region_faces(faces: np.ndarray, selected: np.ndarray) -> np.ndarray:
    return faces[selected[faces].all(axis=1)]


def _erode(selected: np.ndarray, faces: np.ndarray, rings: int) -> np.ndarray:
    """`selected` [V] bool minus `rings` rings of vertices along its border."""
    inside = selected.copy()
    for _ in range(rings):
        on = inside[faces]
        border = on.any(axis=1) & ~on.all(axis=1)
        inside[faces[border].ravel()] = False
    return inside


class PersonMesh:
    """The render mesh of one identity: Anny's full mesh plus garment and hair shells, fixed topology.

    Attributes:
        faces: [Fr, 3] int32 render-vertex indices.
        face_layer: [Fr] uint8 GT layer; face_material: [Fr] uint8 material index.
        face_template: [Fr, 3] int32 template vertex of each corner for bare-skin faces, -1 for faces whose pixels
            map to the nearest body point (garments, hair, eyes, tongue).
        uv: [Nr, 2] float32 texture coordinates (template chart UVs on body and shells, cylindrical on skirts).
    """

    def __init__(self, parts: BodyParts, identity: Identity) -> None:
        self.parts = parts
        self.identity = identity
        outfit = identity.outfit
        rest, chart = parts.rest, parts.chart
        x, y, z = rest[:, 0], rest[:, 1], rest[:, 2]
        hip_y, ankle_y, shoulder_y = parts.level("hip"), parts.level("ankle"), parts.level("shoulder")
        eye_y = parts.level("eye")
        ear_z = (parts.landmarks["left_ear"][2] + parts.landmarks["right_ear"][2]) / 2.0
        is_torso, is_head = np.isin(chart, TORSO), np.isin(chart, HEAD)
        is_arm, is_leg = np.isin(chart, ARMS), np.isin(chart, LEGS)

        specs: list[tuple[np.ndarray, np.ndarray, int, int]] = []  # (selected [V] bool, offsets [V], layer, material)
        # Bottom first: the top lies over its waistband (its offset is larger, see identity.py).
        if outfit.bottom in ("shorts", "trousers", "skirt", "robe"):
            fraction = outfit.leg_fraction if outfit.bottom in ("shorts", "trousers") else min(outfit.leg_fraction, 0.2)
            cut = hip_y - fraction * (hip_y - ankle_y)
            selected = (is_torso & (y < hip_y + 0.08)) | (is_leg & (y > cut))
            specs.append((selected, np.full(len(rest), outfit.bottom_offset_m), LAYER_GARMENT, MAT_BOTTOM))
        if outfit.top != "none":
            hem = hip_y + outfit.top_hem_m
            near_shoulder = np.minimum(
                np.linalg.norm(rest - parts.landmarks["left_shoulder"], axis=1),
                np.linalg.norm(rest - parts.landmarks["right_shoulder"], axis=1),
            )
            selected = (is_torso & (y > hem) & (y < shoulder_y + 0.035)) | (is_arm & (near_shoulder < outfit.sleeve_m))
            chest_y = shoulder_y - 0.15
            # Loose tops hang away from the body more towards the hem.
            profile = 0.6 + 0.4 * np.clip((chest_y - y) / 0.35, 0.0, 1.0) if outfit.top == "loose" else 1.0
            specs.append((selected, outfit.top_offset_m * profile * np.ones(len(rest)), LAYER_GARMENT, MAT_TOP))
        if outfit.hair != "none":
            back = z < ear_z + 0.01
            selected = is_head & ((y > eye_y + 0.05) | (back & (y > eye_y - 0.06)))
            if outfit.hair == "long":
                ear_x = abs(float(parts.landmarks["left_ear"][0]))
                sides = is_head & (y > eye_y - 0.09) & (np.abs(x) > ear_x - 0.015)
                nape = (is_head | is_torso) & (z < ear_z - 0.01) & (y > shoulder_y - 0.1)
                selected |= sides | nape
            # Thicker on the crown than at the hairline.
            profile = 0.5 + 0.5 * np.clip((y - eye_y) / 0.12, 0.0, 1.0)
            specs.append((selected, outfit.hair_offset_m * profile, LAYER_HAIR, MAT_HAIR))

        # Skin deep inside a shell can never be seen (the shell lies outside it everywhere), so its faces leave the
        # render mesh: rays there then test one layer instead of two, the main cost of ray casting clothed people.
        # Two rings of skin faces stay along each shell's border, where skin shows at grazing angles.
        covered = np.zeros(len(rest), bool)
        for selected, _, _, _ in specs:
            covered |= _erode(selected, parts.template_faces, rings=2)
        body = parts.full_to_template[parts.full_faces]
        keep = ~((body >= 0).all(axis=1) & covered[np.maximum(body, 0)].all(axis=1))
        full_faces = parts.full_faces[keep]
        skin_face = (parts.full_to_template[full_faces] >= 0).all(axis=1)
        faces = [full_faces]
        face_template = [parts.full_to_body[full_faces]]
        face_layer = [np.where(skin_face, LAYER_SKIN, LAYER_OTHER).astype(np.uint8)]
        face_material = [np.where(skin_face, MAT_SKIN, MAT_OTHER).astype(np.uint8)]
        uv = [np.zeros((parts.num_full, 2), np.float32)]
        uv[0][parts.template_to_full] = parts.uv
        self.shells: list[Shell] = []
        count = parts.num_full
        for selected, offsets, layer, material in specs:
            region = _region_faces(parts.template_faces, selected)
            if len(region) == 0:
                continue
            ids = np.unique(region)
            local = np.full(len(rest), -1, np.int64)
            local[ids] = np.arange(len(ids)) + count
            faces.append(local[region].astype(np.int32))
            face_template.append(region.astype(np.int32))  # a shell point maps to the body point it was pushed from
            face_layer.append(np.full(len(region), layer, np.uint8))
            face_material.append(np.full(len(region), material, np.uint8))
            uv.append(parts.uv[ids])
            self.shells.append(Shell(ids.astype(np.int64), offsets[ids].astype(np.float32)))
            count += len(ids)

        self.skirt: Skirt | None = None
        self.skirt_start = count
        if outfit.bottom in ("skirt", "robe"):
            waist_y = hip_y + 0.08
            hem_y = hip_y - outfit.skirt_fraction * (hip_y - ankle_y)
            source = np.flatnonzero((is_leg | is_torso) & (y < waist_y + 0.02) & (y > hem_y - 0.1))
            waist = np.flatnonzero(is_torso & (np.abs(y - waist_y) < 0.03))
            self.skirt = Skirt(waist_y, hem_y, outfit.bottom_offset_m + 0.01, outfit.skirt_flare, source, waist)
            rings, segs = SKIRT_RINGS + 1, SKIRT_SEGMENTS
            r, s = np.meshgrid(np.arange(rings), np.arange(segs), indexing="ij")
            idx = count + r * segs + s
            a, b = idx[:-1], np.roll(idx, -1, axis=1)[:-1]
            c, d = idx[1:], np.roll(idx, -1, axis=1)[1:]
            quads = np.stack([a, b, d, c], axis=-1).reshape(-1, 4)
            tri = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
            faces.append(tri)
            face_template.append(np.full((len(tri), 3), -1, np.int32))
            face_layer.append(np.full(len(tri), LAYER_GARMENT, np.uint8))
            face_material.append(np.full(len(tri), MAT_BOTTOM, np.uint8))
            uv.append(np.stack([s.ravel() / segs, r.ravel() / (rings - 1)], axis=1).astype(np.float32))
            count += rings * segs

        self.num_vertices = count
        self.faces = np.concatenate(faces).astype(np.int32)
        self.face_template = np.concatenate(face_template).astype(np.int32)
        self.face_layer = np.concatenate(face_layer)
        self.face_material = np.concatenate(face_material)
        self.uv = np.concatenate(uv).astype(np.float32)
        if self.skirt is not None:
            self._skirt_faces = self.faces[-2 * SKIRT_RINGS * SKIRT_SEGMENTS :] - self.skirt_start

    def vertices(self, full: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render-mesh vertices and shading normals for one posed body.

        Args:
            full: [N, 3] float32 posed Anny full mesh (body frame, metres).
        Returns:
            (render vertices [Nr, 3], unit normals [Nr, 3], posed template vertices [V, 3]), float32, body frame.
            Shells share the normals of the body vertices they are pushed from; eyes and tongue borrow those of
            their nearest skin vertex (both only shade pixels).
        """
        parts = self.parts
        template = full[parts.template_to_full]
        body_normals = vertex_normals(template, parts.template_faces)
        points, normals = [full], [body_normals[parts.full_to_body]]
        for shell in self.shells:
            points.append(template[shell.ids] + body_normals[shell.ids] * shell.offsets[:, None])
            normals.append(body_normals[shell.ids])
        if self.skirt is not None:
            ring = skirt_vertices(self.skirt, template)
            points.append(ring)
            normals.append(vertex_normals(ring, self._skirt_faces))
        return np.concatenate(points).astype(np.float32), np.concatenate(normals), template


def skirt_vertices(skirt: Skirt, template: np.ndarray) -> np.ndarray:
    """Ring vertices [(R+1) * S, 3] of a skirt around the posed legs (`template`: [V, 3] posed, body frame).

    Each ring's radius per angular sector is the farthest posed leg/hip point of that sector at or above the ring
    (a skirt never narrows going down), smoothed around the ring, plus a margin and a downward flare.
    """
    rings, segs = SKIRT_RINGS, SKIRT_SEGMENTS
    axis = template[skirt.waist].mean(axis=0)
    pts = template[skirt.source] - axis
    length = skirt.waist_y - skirt.hem_y
    step = length / rings
    height = pts[:, 1] + axis[1]
    ring = np.clip(np.floor((skirt.waist_y - height) / step), 0, rings).astype(np.int64)
    keep = height > skirt.hem_y - step
    angle = np.arctan2(pts[:, 2], pts[:, 0])
    sector = (np.floor((angle + np.pi) / (2 * np.pi) * segs).astype(np.int64)) % segs
    radius = np.zeros((rings + 1, segs))
    np.maximum.at(radius, (ring[keep], sector[keep]), np.hypot(pts[keep, 0], pts[keep, 2]))
    radius = np.maximum.accumulate(radius, axis=0)
    # Neighbouring sectors: a max filter closes gaps between sparse samples, a mean filter rounds the outline.
    radius = np.maximum(radius, np.maximum(np.roll(radius, 1, axis=1), np.roll(radius, -1, axis=1)))
    radius = (np.roll(radius, 1, axis=1) + radius + np.roll(radius, -1, axis=1)) / 3.0
    depth = np.arange(rings + 1)[:, None] * step
    radius = radius + skirt.margin + skirt.flare * depth
    theta = (np.arange(segs) + 0.5) / segs * 2 * np.pi - np.pi
    ys = skirt.waist_y - depth
    out = np.stack(
        [
            axis[0] + radius * np.cos(theta)[None, :],
            np.broadcast_to(ys, radius.shape),
            axis[2] + radius * np.sin(theta)[None, :],
        ],
        axis=-1,
    )
    return out.reshape(-1, 3).astype(np.float32)


__all__ = [
    "LAYER_GARMENT",
    "LAYER_HAIR",
    "LAYER_OTHER",
    "LAYER_SKIN",
    "BodyParts",
    "PersonMesh",
    "skirt_vertices",
    "vertex_normals",
]
