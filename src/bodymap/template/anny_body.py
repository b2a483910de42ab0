"""Anny (PyPI `anny`, Apache-2.0 code, CC0 MakeHuman assets) as bodymap's body model.

Anny works in a z-up frame with the person facing -y. bodymap's body frame is SMPL-like: x = the person's left,
y = up, z = forward (the person faces +z), metres. `ANNY_TO_BODY` maps one to the other; everything bodymap stores
is in the body frame.

The first `anny.Anny()` on a machine builds a cache (~90 s, in `ANNY_CACHE_DIR`, default ~/.cache/anny); later
constructions take ~0.1 s. The template stage records the Anny configuration, so any stage can re-create the
same model and pose it (`AnnyBody.from_template_meta`).
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from bodymap.determinism import torch_threads

log = logging.getLogger(__name__)

# Rows: body-frame axes expressed in Anny's axes. x' = x, y' = z, z' = -y (a proper rotation).
ANNY_TO_BODY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], np.float32)
PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")

# Body regions of Anny's bones, matched on the bone name without its .L/.R suffix.
BONE_REGIONS: tuple[tuple[str, str], ...] = (
    ("head", r"^(head|neck\d*|eye|jaw|tongue.*|special.*)$"),
    ("torso", r"^(root|pelvis|spine\d*|clavicle|shoulder\d*|breast.*)$"),
    ("upper_arm", r"^upperarm\d*$"),
    ("lower_arm", r"^lowerarm\d*$"),
    ("hand", r"^(wrist|metacarpal\d*|finger\d+-\d+)$"),
    ("upper_leg", r"^upperleg\d*$"),
    ("lower_leg", r"^lowerleg\d*$"),
    ("foot", r"^(foot|toe\d+-\d+)$"),
)


def bone_region(label: str) -> tuple[str, str]:
    """(region, side) of an Anny bone label; side is 'L', 'R' (the person's own) or 'C' (centre)."""
    base, side = label, "C"
    if label.endswith((".L", ".R")):
        base, side = label[:-2], label[-1]
    for region, pattern in BONE_REGIONS:
        if re.match(pattern, base):
            # Head and torso are one region each (their charts split by side or by normal, not by bone).
            return region, "C" if region in ("head", "torso") else side
    raise ValueError(f"Anny bone {label!r} matches no body region; extend BONE_REGIONS")


@dataclass
class PosedBodies:
    """Posed Anny meshes in the body frame. vertices: [B, N, 3] float32; keypoints: [B, K, 3] float32."""

    vertices: np.ndarray
    keypoints: np.ndarray


class AnnyBody:
    """An Anny model for posing and shaping, with its COCO keypoint regressor.

    Args:
        topology: Anny topology name ('anny' = the full MakeHuman body with eyes and tongue).
        device: torch device for the model.
    """

    def __init__(self, topology: str = "anny", device: str = "cpu") -> None:
        import anny

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = anny.Anny(topology=topology).to(device=device, dtype=torch.float32)
            self.keypoint_regressor = anny.KeypointsRegressor.coco(self.model)
        self.topology = topology
        self.device = device
        self.faces = self.model.get_triangular_faces().cpu().numpy().astype(np.int32)
        self.bone_labels: list[str] = list(self.model.bone_labels)
        self.bone_parents: list[int] = list(self.model.bone_parents)
        self.keypoint_names: list[str] = list(self.keypoint_regressor.labels)
        self._to_body = torch.as_tensor(ANNY_TO_BODY, device=device)

    @property
    def num_vertices(self) -> int:
        return int(self.model.template_vertices.shape[0])

    def base_vertices(self) -> np.ndarray:
        """[N, 3] float32 Anny's base mesh (body frame): exactly left/right symmetric, unlike shaped bodies."""
        return (self.model.template_vertices.cpu().numpy() @ ANNY_TO_BODY.T).astype(np.float32)

    def skinning(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights [N, J'] float32, bone indices [N, J'] int32): Anny's sparse per-vertex skinning."""
        return (
            self.model.vertex_bone_weights.cpu().numpy().astype(np.float32),
            self.model.vertex_bone_indices.cpu().numpy().astype(np.int32),
        )

    def keypoint_weights(self) -> np.ndarray:
        """[K, N] float32 keypoint regression weights over the full mesh (rows sum to 1)."""
        return self.keypoint_regressor.regression_weights.cpu().numpy().astype(np.float32)

    def phenotype_tensor(self, shapes: list[dict[str, float]]) -> dict[str, torch.Tensor]:
        """Batch phenotype dicts (keys from PHENOTYPES, values in [0, 1]) into Anny's keyword tensors."""
        return {
            name: torch.tensor([float(s.get(name, 0.5)) for s in shapes], device=self.device) for name in PHENOTYPES
        }

    @torch.no_grad()
    def pose(self, shapes: list[dict[str, float]], bone_rotations: np.ndarray | None = None) -> PosedBodies:
        """Shape and pose a batch of bodies.

        Args:
            shapes: B phenotype dicts.
            bone_rotations: [B, J, 3, 3] float32 local rotations per bone in Anny's 'local-ref' parameterisation
                (identity = Anny's rest A-pose), or None for the rest pose. Bone 0 (root) rotates the whole body.
        Returns:
            Vertices and COCO keypoints in the body frame, root at the origin.
        """
        batch = len(shapes)
        pose = None
        if bone_rotations is not None:
            rot = torch.as_tensor(bone_rotations, dtype=torch.float32, device=self.device)
            pose = torch.eye(4, device=self.device).repeat(batch, rot.shape[1], 1, 1)
            pose[:, :, :3, :3] = rot
        # One torch thread, whatever the caller's count: the vertices depend on it (a batch of 4 posed at 16 threads
        # differed from 1..8 threads), and the renderer's parallelism comes from worker processes.
        with warnings.catch_warnings(), torch_threads(1):
            warnings.simplefilter("ignore")
            out = self.model(pose_parameters=pose, phenotype_kwargs=self.phenotype_tensor(shapes))
            vertices = out["vertices"].to(torch.float32)
            keypoints = self.keypoint_regressor({"vertices": vertices})
            vertices = vertices @ self._to_body.T
            keypoints = keypoints @ self._to_body.T
        return PosedBodies(vertices.cpu().numpy(), keypoints.cpu().numpy())
