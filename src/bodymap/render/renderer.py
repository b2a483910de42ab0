"""The renderer: poses Anny in batches, ray-casts people with Warp, and returns images with exact dense GT.

Per pixel, the nearest hit over all people (crowd occlusion by depth) gives the person, the render-mesh face and its
barycentrics, hence the exact surface point. Bare-skin faces carry their template vertices, so the GT vertex is the
hit face's corner with the largest barycentric weight (as in the template pictures); pixels on garments, hair, eyes
and tongue map to the nearest point of that person's posed body surface (`MeshQuery.closest`), so the GT covers the
whole silhouette (paper Secs. 3.1, 3.6).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from bodymap.determinism import ordered_matmul, torch_threads
from bodymap.errors import BodymapError
from bodymap.raycast import MeshQuery, nearest_corner, warp, warp_device
from bodymap.render.appearance import identity_albedo, shade
from bodymap.render.background import Backgrounds
from bodymap.render.camera import Camera
from bodymap.render.garments import BodyParts, PersonMesh
from bodymap.render.identity import Identity
from bodymap.render.poses import Skeleton
from bodymap.render.scene import PersonInstance, Scene, resolve_camera
from bodymap.template.anny_body import ANNY_TO_BODY, AnnyBody
from bodymap.template.mesh import BodyTemplate

COCO_KEYPOINTS = 17
CACHED_PEOPLE = 128  # render meshes + BVHs kept per process (~3 MB each)
POSE_BATCH = 64
NEAR_M = 0.05


@dataclass
class PosedPerson:
    """A person posed and placed in the world. vertices, normals: [Nr, 3] float32 render mesh (normals unit);
    template: [V, 3] float32 posed template vertices; keypoints: [K, 3] float32 (Anny's COCO + feet keypoints), all
    world metres."""

    instance: PersonInstance
    mesh: PersonMesh
    vertices: np.ndarray
    normals: np.ndarray
    template: np.ndarray
    keypoints: np.ndarray
    lo: np.ndarray  # [3] bounding box of `vertices`
    hi: np.ndarray


@dataclass
class Frame:
    """One rendered image with its dense GT (row-major [H, W] maps).

    Attributes:
        image: [H, W, 3] uint8 (before any degradation).
        vertex: [H, W] int32 template vertex (-1 background); person: [H, W] int16 (-1 background);
        chart: [H, W] uint8 DensePose I (0 background); layer: [H, W] uint8 (0 bg, 1 skin, 2 garment, 3 hair, 4 other);
        depth: [H, W] float32 metres along the optical axis (0 background).
        face: [H, W] int32 render-mesh face hit (-1 background); bary: [H, W, 3] float32 its barycentrics.
        keypoints: [P, 17, 3] float32 COCO keypoints per person (x, y, visibility 0/1/2; x = y = 0 when v = 0).
    """

    image: np.ndarray
    vertex: np.ndarray
    person: np.ndarray
    chart: np.ndarray
    layer: np.ndarray
    depth: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    keypoints: np.ndarray
    camera: Camera
    people: list[PosedPerson]

    @property
    def mask(self) -> np.ndarray:
        return self.person >= 0


def _interpolate(bary: np.ndarray, values: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex `values` [N, D] over faces `tri` [P, 3] with weights [P, 3]."""
    # Three fused multiply-adds beat einsum("pk,pkd->pd") on gathered (P, 3, D) arrays by ~3x here.
    return bary[:, :1] * values[tri[:, 0]] + bary[:, 1:2] * values[tri[:, 1]] + bary[:, 2:] * values[tri[:, 2]]


def _yaw(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]], np.float32)


class Renderer:
    """Renders scenes of the given identities on the template's Anny body.

    Args:
        template: a template built from Anny (`meta['anny_topology']`, `template_to_full`).
        identities: every identity scenes may refer to (by index).
        image_size: square image side in pixels.
        backgrounds: background source (procedural by default).
        device: Warp device ('auto', 'cpu', 'cuda'); Anny is posed with torch on the CPU.
    """

    def __init__(
        self,
        template: BodyTemplate,
        identities: list[Identity],
        image_size: int,
        backgrounds: Backgrounds | None = None,
        device: str = "auto",
    ) -> None:
        if template.meta.get("source") != "anny" or len(template.template_to_full) == 0:
            raise BodymapError(
                f"{template.directory}: the renderer needs a template built from Anny (template.source: anny); "
                f"this one is {template.meta.get('source')!r}"
            )
        warp()  # initialise Warp quietly before Anny imports it
        self.device = warp_device(device)
        self.template = template
        self.identities = identities
        self.size = int(image_size)
        self.backgrounds = backgrounds or Backgrounds(None)
        self.body = AnnyBody(str(template.meta.get("anny_topology", "anny")))
        shape = dict(template.meta.get("shape", {}))
        rest = self.body.pose([shape])
        with warnings.catch_warnings(), torch_threads(1):  # as AnnyBody.pose: one thread, the same bones anywhere
            warnings.simplefilter("ignore")
            out = self.body.model(pose_parameters=None, phenotype_kwargs=self.body.phenotype_tensor([shape]))
        heads = out["rest_bone_poses"][0, :, :3, 3].cpu().numpy() @ ANNY_TO_BODY.T
        self.skeleton = Skeleton(self.body.bone_labels, heads, self.body.bone_parents)
        self._template_query = MeshQuery(template.vertices, template.faces, device=self.device)
        # Eyes and tongue map to the skin vertex nearest to them at rest (they move rigidly with the head).
        full_to_body = np.full(self.body.num_vertices, -1, np.int32)
        full_to_body[template.template_to_full] = np.arange(template.num_vertices, dtype=np.int32)
        extra = np.flatnonzero(full_to_body < 0)
        if len(extra):
            f, b = self._template_query.closest(rest.vertices[0][extra], max_dist=10.0)
            full_to_body[extra] = nearest_corner(template.faces, f, b)
        self.parts = BodyParts(
            full_faces=self.body.faces,
            num_full=self.body.num_vertices,
            template_to_full=template.template_to_full.astype(np.int64),
            template_faces=template.faces,
            rest=template.vertices,
            chart=template.chart,
            uv=template.uv,
            landmarks=dict(zip(self.body.keypoint_names, rest.keypoints[0].astype(np.float64), strict=True)),
            full_to_body=full_to_body,
        )
        self._rest_full = rest.vertices[0]
        # identity -> (render mesh, its BVH), least recently used first; bounded, for runs with many identities.
        self._people: OrderedDict[int, tuple[PersonMesh, MeshQuery]] = OrderedDict()

    # ------------------------------------------------------------------------------------------------ people
    def _person(self, identity: int) -> tuple[PersonMesh, MeshQuery]:
        if identity in self._people:
            self._people.move_to_end(identity)
            return self._people[identity]
        mesh = PersonMesh(self.parts, self.identities[identity])
        # The BVH is built from the rest pose and refitted per frame: its layout (hence tie-breaking between
        # equally near hits) does not depend on which frame a worker meets first, keeping outputs byte-identical.
        query = MeshQuery(mesh.vertices(self._rest_full)[0], mesh.faces, device=self.device)
        self._people[identity] = (mesh, query)
        if len(self._people) > CACHED_PEOPLE:
            self._people.popitem(last=False)
        return mesh, query

    def person_mesh(self, identity: int) -> PersonMesh:
        return self._person(identity)[0]

    def prepare(self) -> None:
        """Build the render meshes and BVHs of the first CACHED_PEOPLE identities now rather than on first use."""
        for identity in range(min(len(self.identities), CACHED_PEOPLE)):
            self._person(identity)

    def pose(self, people: list[PersonInstance]) -> list[PosedPerson]:
        """Pose and place a batch of people (one Anny call for all), feet on the ground y = 0."""
        if not people:
            return []
        rotations = self.skeleton.rotations(np.stack([p.pose for p in people]))
        shapes = [self.identities[p.identity].shape for p in people]
        # Batches of at most POSE_BATCH bodies bound memory on long sequences (Anny poses on one torch thread).
        batches = [
            self.body.pose(shapes[i : i + POSE_BATCH], rotations[i : i + POSE_BATCH])
            for i in range(0, len(people), POSE_BATCH)
        ]
        full = np.concatenate([b.vertices for b in batches])
        keypoints = np.concatenate([b.keypoints for b in batches])
        posed = []
        for k, person in enumerate(people):
            mesh = self.person_mesh(person.identity)
            vertices, normals, template = mesh.vertices(full[k])
            rot = _yaw(person.yaw_deg)
            shift = np.array([person.position[0], -float(full[k][:, 1].min()), person.position[1]], np.float32)
            world = ordered_matmul(vertices, rot.T) + shift
            posed.append(
                PosedPerson(
                    person,
                    mesh,
                    world,
                    ordered_matmul(normals, rot.T),
                    ordered_matmul(template, rot.T) + shift,
                    ordered_matmul(keypoints[k], rot.T) + shift,
                    world.min(axis=0),
                    world.max(axis=0),
                )
            )
        return posed

    # ------------------------------------------------------------------------------------------------ frames
    def camera_for(self, scene: Scene, people: list[PosedPerson]) -> Camera:
        lo = np.min([p.lo for p in people], axis=0)
        hi = np.max([p.hi for p in people], axis=0)
        names = self.body.keypoint_names
        kp = people[0].keypoints
        upper = (kp[names.index("left_shoulder")] + kp[names.index("right_shoulder")] + kp[names.index("nose")]) / 3
        return resolve_camera(scene.camera, lo, hi, upper, self.size)

    def _window(self, camera: Camera, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int, int, int] | None:
        """Pixel rectangle covering the projection of a world box (lo, hi: [3]), or None when it is out of view.

        The corners of a person's 3D bounding box bound its projection (a slightly larger window than the
        vertices', at 8 projections instead of ~20k).
        """
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        uv, z = camera.project(corners)
        if (z > NEAR_M).sum() == 0:
            return None
        if (z <= NEAR_M).any():  # partly behind the camera: projected bounds are meaningless, cast everything
            return 0, 0, camera.width, camera.height
        x0, y0 = np.floor(uv.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, camera.width), min(y1, camera.height)
        if x1 <= x0 or y1 <= y0:
            return None
        return int(x0), int(y0), int(x1), int(y1)

    def render(self, scene: Scene, people: list[PosedPerson], camera: Camera | None = None) -> Frame:
        """Ray-cast, compute the dense GT, shade and composite one scene whose people are already posed."""
        camera = camera or self.camera_for(scene, people)
        h, w = camera.height, camera.width
        n = h * w
        dirs, zfac = camera.rays
        zbuf = np.full(n, np.inf, np.float32)
        person = np.full(n, -1, np.int16)
        face = np.full(n, -1, np.int32)
        bary = np.zeros((n, 3), np.float32)
        for i, p in enumerate(people):
            window = self._window(camera, p.lo, p.hi)
            if window is None:
                continue
            query = self._person(p.instance.identity)[1]
            query.update(p.vertices)
            hits = query.cast_pinhole(
                camera.origin, camera.cam_to_world, camera.intrinsics, w, h, max_t=1e4, window=window
            )
            x0, y0, x1, _ = window
            hit = np.flatnonzero(hits.face >= 0)
            ids = (hit // (x1 - x0) + y0) * w + hit % (x1 - x0) + x0  # window index -> image pixel index
            f, b = hits.face[hit], hits.bary[hit]
            z = hits.t[hit] * zfac[ids]
            nearer = z < zbuf[ids]  # crowd occlusion: the nearest surface over all people wins
            ids = ids[nearer]
            zbuf[ids], person[ids], face[ids], bary[ids] = z[nearer], i, f[nearer], b[nearer]

        vertex = np.full(n, -1, np.int32)
        layer = np.zeros(n, np.uint8)
        chart = np.zeros(n, np.uint8)
        background = self.backgrounds.sample(np.random.default_rng(scene.background_seed), camera)
        image = (background.reshape(n, 3) * 255.0 + 0.5).astype(np.uint8)
        fg = np.flatnonzero(person >= 0)
        owner = person[fg]
        for i, p in enumerate(people):
            sel = fg if len(people) == 1 else fg[owner == i]
            if len(sel) == 0:
                continue
            f, b = face[sel], bary[sel]
            corners = p.mesh.face_template[f]
            v = corners[np.arange(len(sel)), np.argmax(b, axis=1)]
            lookup = corners[:, 0] < 0
            if lookup.any():
                points = _interpolate(b[lookup], p.vertices, p.mesh.faces[f[lookup]])
                self._template_query.update(p.template)
                tf, tb = self._template_query.closest(points, max_dist=10.0)
                v[lookup] = nearest_corner(self.template.faces, tf, tb)
            vertex[sel] = v
            chart[sel] = self.template.chart[v]
            layer[sel] = p.mesh.face_layer[f]
            # Shading: smooth normals interpolated over the hit face, turned towards the camera (shell interiors).
            tri = p.mesh.faces[f]
            nrm = _interpolate(b, p.normals, tri)
            nrm /= np.maximum(np.sqrt(np.einsum("pd,pd->p", nrm, nrm))[:, None], 1e-12)
            facing = np.einsum("pd,pd->p", nrm, dirs[sel]) > 0
            nrm[facing] *= -1
            uv = _interpolate(b, p.mesh.uv, tri)
            identity = self.identities[p.instance.identity]
            colour = shade(identity_albedo(identity, p.mesh.face_material[f], uv), nrm, scene.lighting)
            image[sel] = (colour * 255.0 + 0.5).astype(np.uint8)
        depth = np.zeros(n, np.float32)
        depth[fg] = zbuf[fg]
        frame = Frame(
            image=image.reshape(h, w, 3),
            vertex=vertex.reshape(h, w),
            person=person.reshape(h, w),
            chart=chart.reshape(h, w),
            layer=layer.reshape(h, w),
            depth=depth.reshape(h, w),
            face=face.reshape(h, w),
            bary=bary.reshape(h, w, 3),
            keypoints=np.zeros((len(people), COCO_KEYPOINTS, 3), np.float32),
            camera=camera,
            people=people,
        )
        frame.keypoints = self._keypoints(frame)
        return frame

    def _keypoints(self, frame: Frame) -> np.ndarray:
        """COCO keypoints per person: v = 2 where the keypoint's pixel shows this person no farther than 12 cm in
        front of the joint (joints lie inside the body), v = 1 when in the image but hidden, v = 0 outside."""
        cam = frame.camera
        out = np.zeros((len(frame.people), COCO_KEYPOINTS, 3), np.float32)
        for i, p in enumerate(frame.people):
            xy, z = cam.project(p.keypoints[:COCO_KEYPOINTS])
            inside = (z > NEAR_M) & (xy[:, 0] >= 0) & (xy[:, 0] < cam.width) & (xy[:, 1] >= 0) & (xy[:, 1] < cam.height)
            px = np.clip(xy.astype(np.int64), 0, [cam.width - 1, cam.height - 1])
            shown = frame.person[px[:, 1], px[:, 0]] == i
            near = frame.depth[px[:, 1], px[:, 0]] > z - 0.12
            vis = np.where(inside, np.where(shown & near, 2, 1), 0)
            out[i, :, 0] = np.where(inside, xy[:, 0], 0)
            out[i, :, 1] = np.where(inside, xy[:, 1], 0)
            out[i, :, 2] = vis
        return out

    def render_scenes(self, scenes: list[Scene]) -> list[Frame]:
        """Render several scenes, posing all their people in one batch."""
        flat = [p for s in scenes for p in s.people]
        posed = self.pose(flat)
        frames, k = [], 0
        for scene in scenes:
            people = posed[k : k + len(scene.people)]
            k += len(scene.people)
            frames.append(self.render(scene, people))
        return frames


__all__ = ["Frame", "PosedPerson", "Renderer"]
