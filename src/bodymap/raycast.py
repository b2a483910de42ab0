"""Ray casting and closest-point queries on triangle meshes with NVIDIA Warp (CPU or CUDA by device).

The exact ground truth of the renderer and the template's pictures both come from here: per ray, the hit
triangle, its barycentric coordinates and the distance. Barycentrics follow Warp's convention: the hit point is
`b0 * v0 + b1 * v1 + b2 * v2` for the face's vertices (v0, v1, v2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from bodymap.errors import BodymapError

log = logging.getLogger(__name__)

_WARP = None


def warp():
    """Import and initialise Warp once, quietly (its banner goes to the debug log, not the console)."""
    global _WARP
    if _WARP is None:
        import warp as wp

        wp.config.quiet = True
        wp.config.log_level = wp.LOG_WARNING  # no banner or "module compiled" lines on the console
        wp.init()
        _WARP = wp
        _compile_kernels(wp)
    return _WARP


def warp_device(device: str = "auto") -> str:
    """'cuda' when asked for and available (or 'auto' with a GPU), else 'cpu'."""
    wp = warp()
    if device == "cpu":
        return "cpu"
    has_cuda = wp.get_cuda_device_count() > 0
    if device == "cuda" and not has_cuda:
        raise BodymapError("device 'cuda' requested but Warp sees no CUDA device")
    return "cuda:0" if has_cuda else "cpu"


_KERNELS: dict[str, object] = {}


def _compile_kernels(wp) -> None:
    @wp.func
    def store_hit(
        tid: int,
        hit: bool,
        face: int,
        u: float,
        v: float,
        t: float,
        face_out: wp.array(dtype=wp.int32),
        bary_out: wp.array(dtype=wp.vec3),
        t_out: wp.array(dtype=wp.float32),
    ):
        # Misses are face -1 with zero barycentrics and distance.
        if hit:
            face_out[tid] = face
            bary_out[tid] = wp.vec3(u, v, 1.0 - u - v)
            t_out[tid] = t
        else:
            face_out[tid] = -1
            bary_out[tid] = wp.vec3(0.0, 0.0, 0.0)
            t_out[tid] = 0.0

    @wp.kernel
    def cast(
        mesh: wp.uint64,
        origins: wp.array(dtype=wp.vec3),
        directions: wp.array(dtype=wp.vec3),
        max_t: float,
        face_out: wp.array(dtype=wp.int32),
        bary_out: wp.array(dtype=wp.vec3),
        t_out: wp.array(dtype=wp.float32),
    ):
        tid = wp.tid()
        query = wp.mesh_query_ray(mesh, origins[tid], directions[tid], max_t)
        store_hit(tid, query.result, query.face, query.u, query.v, query.t, face_out, bary_out, t_out)

    @wp.kernel
    def pinhole(
        mesh: wp.uint64,
        origin: wp.vec3,
        cam_to_world: wp.mat33,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        x0: int,
        y0: int,
        width: int,
        max_t: float,
        face_out: wp.array(dtype=wp.int32),
        bary_out: wp.array(dtype=wp.vec3),
        t_out: wp.array(dtype=wp.float32),
    ):
        tid = wp.tid()
        # (x0, y0, width): the pixel window being cast; the whole image is x0 = y0 = 0, width = image width.
        px = float(x0 + tid % width) + 0.5
        py = float(y0 + tid // width) + 0.5
        # OpenCV camera: x right, y down, z forward; t is measured along the unit ray.
        d = wp.normalize(cam_to_world * wp.vec3((px - cx) / fx, (py - cy) / fy, 1.0))
        query = wp.mesh_query_ray(mesh, origin, d, max_t)
        store_hit(tid, query.result, query.face, query.u, query.v, query.t, face_out, bary_out, t_out)

    @wp.kernel
    def closest(
        mesh: wp.uint64,
        points: wp.array(dtype=wp.vec3),
        max_dist: float,
        face_out: wp.array(dtype=wp.int32),
        bary_out: wp.array(dtype=wp.vec3),
    ):
        tid = wp.tid()
        query = wp.mesh_query_point_no_sign(mesh, points[tid], max_dist)
        if query.result:
            face_out[tid] = query.face
            bary_out[tid] = wp.vec3(query.u, query.v, 1.0 - query.u - query.v)
        else:
            face_out[tid] = -1
            bary_out[tid] = wp.vec3(0.0, 0.0, 0.0)

    _KERNELS.update(cast=cast, pinhole=pinhole, closest=closest)


@dataclass
class Hits:
    """Per-ray results. face: [R] int32 (-1 = miss); bary: [R, 3] float32; t: [R] float32 distance along the ray."""

    face: np.ndarray
    bary: np.ndarray
    t: np.ndarray


class MeshQuery:
    """A triangle mesh uploaded to Warp with its BVH, for repeated ray casts and closest-point queries.

    Args:
        vertices: [N, 3] float32 positions.
        faces: [F, 3] int32 vertex indices.
        device: 'auto', 'cpu' or 'cuda'.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, device: str = "auto") -> None:
        wp = warp()
        self.device = warp_device(device)
        self.num_faces = len(faces)
        self._points = wp.array(np.ascontiguousarray(vertices, np.float32), dtype=wp.vec3, device=self.device)
        self._indices = wp.array(np.ascontiguousarray(faces, np.int32).ravel(), dtype=wp.int32, device=self.device)
        self.mesh = wp.Mesh(points=self._points, indices=self._indices)

    def update(self, vertices: np.ndarray) -> None:
        """Move the vertices (same topology) and refit the BVH, cheaper than rebuilding the mesh."""
        wp = warp()
        self._points.assign(wp.array(np.ascontiguousarray(vertices, np.float32), dtype=wp.vec3, device=self.device))
        self.mesh.refit()

    def _outputs(self, n: int):
        wp = warp()
        return (
            wp.empty(n, dtype=wp.int32, device=self.device),
            wp.empty(n, dtype=wp.vec3, device=self.device),
            wp.empty(n, dtype=wp.float32, device=self.device),
        )

    def cast(self, origins: np.ndarray, directions: np.ndarray, max_t: float = 1e6) -> Hits:
        """Nearest hit per ray. origins, directions: [R, 3] float32 (directions unit length for metric t)."""
        wp = warp()
        n = len(origins)
        face, bary, t = self._outputs(n)
        wp.launch(
            _KERNELS["cast"],
            dim=n,
            inputs=[
                self.mesh.id,
                wp.array(np.ascontiguousarray(origins, np.float32), dtype=wp.vec3, device=self.device),
                wp.array(np.ascontiguousarray(directions, np.float32), dtype=wp.vec3, device=self.device),
                float(max_t),
            ],
            outputs=[face, bary, t],
            device=self.device,
        )
        return Hits(face.numpy(), bary.numpy(), t.numpy())

    def cast_pinhole(
        self,
        origin: np.ndarray,
        cam_to_world: np.ndarray,
        intrinsics: tuple[float, float, float, float],
        width: int,
        height: int,
        max_t: float = 1e6,
        window: tuple[int, int, int, int] | None = None,
    ) -> Hits:
        """One ray per pixel centre of a pinhole camera, row-major [H * W].

        Args:
            origin: [3] camera centre in world coordinates.
            cam_to_world: [3, 3] rotation from OpenCV camera axes (x right, y down, z forward) to world.
            intrinsics: (fx, fy, cx, cy) in pixels.
            window: optional (x0, y0, x1, y1) pixel rectangle (x1, y1 exclusive) to cast instead of the whole image;
                results are then row-major over the window, [(y1 - y0) * (x1 - x0)]. Rays that cannot reach the mesh
                cost little, but skipping them entirely matters for small people in large images.
        """
        wp = warp()
        x0, y0, x1, y1 = window if window is not None else (0, 0, width, height)
        n = max(0, x1 - x0) * max(0, y1 - y0)
        face, bary, t = self._outputs(n)
        if n == 0:
            return Hits(face.numpy(), bary.numpy(), t.numpy())
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        wp.launch(
            _KERNELS["pinhole"],
            dim=n,
            inputs=[
                self.mesh.id,
                wp.vec3(*np.asarray(origin, np.float32).tolist()),
                wp.mat33(*np.asarray(cam_to_world, np.float32).ravel().tolist()),
                fx,
                fy,
                cx,
                cy,
                int(x0),
                int(y0),
                int(x1 - x0),
                float(max_t),
            ],
            outputs=[face, bary, t],
            device=self.device,
        )
        return Hits(face.numpy(), bary.numpy(), t.numpy())

    def closest(self, points: np.ndarray, max_dist: float = 1e6) -> tuple[np.ndarray, np.ndarray]:
        """Closest surface point per query point: (face [P] int32, -1 if none within max_dist; bary [P, 3])."""
        wp = warp()
        n = len(points)
        face, bary, _ = self._outputs(n)
        wp.launch(
            _KERNELS["closest"],
            dim=n,
            inputs=[
                self.mesh.id,
                wp.array(np.ascontiguousarray(points, np.float32), dtype=wp.vec3, device=self.device),
                float(max_dist),
            ],
            outputs=[face, bary],
            device=self.device,
        )
        return face.numpy(), bary.numpy()


def nearest_corner(faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """The vertex of each hit face with the largest barycentric weight; -1 where face is -1.

    Args:
        faces: [F, 3] int32 mesh faces; face: [R] int32 hit faces; bary: [R, 3] float32.
    Returns:
        [R] int32 vertex ids.
    """
    out = np.full(face.shape, -1, np.int32)
    hit = face >= 0
    corner = np.argmax(bary[hit], axis=1)
    out[hit] = faces[face[hit], corner]
    return out
