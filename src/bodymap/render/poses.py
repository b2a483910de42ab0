"""Body poses for the renderer: joint angles within limits, random natural poses, a walk cycle, key-pose motion.

A pose is a vector of joint angles (degrees), one per degree of freedom (DOF) in `Skeleton.dofs`; each DOF turns
one Anny bone about an anatomical axis. Vectors interpolate linearly (smooth motion) and stay inside the limits.
`Skeleton.rotations` turns them into the per-bone rotations `AnnyBody.pose` takes (Anny's 'local-ref'
parameterisation: each bone's rotation about its head, in world-aligned axes, identity = the rest A-pose).

Axes are defined in bodymap's body frame (x = person's left, y = up, z = forward) for the person's left side; the
right side mirrors them (x -> -x), so one table of limits serves both sides. Signs, checked on the rest skeleton:
about x, a positive angle turns a downward limb backward (hip extension, knee flexion, forward spine bend).

Anny ships one walk cycle (`data/mpfb2/walkcycles`), but as Blender IK-target animation curves (hand/foot target
locations) that would need an IK solver; bodymap synthesises its walk from sinusoidal hip, knee, ankle, shoulder,
elbow and spine angles instead (`walk_pose`). Paper Sec. 3.1 (synthetic data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (bone, [(axis, lo, hi, neutral)]), angles in degrees, for the centre and the person's left side (.L); the right
# side mirrors each left entry. Axes: 'x', 'y', 'z' (body frame) or anatomical ones derived from the rest skeleton.
_SPINE = [("x", -8.0, 12.0, 0.0), ("z", -6.0, 6.0, 0.0), ("y", -8.0, 8.0, 0.0)]
_NECK = [("x", -12.0, 15.0, 0.0), ("z", -8.0, 8.0, 0.0), ("y", -15.0, 15.0, 0.0)]
JOINT_LIMITS: tuple[tuple[str, list[tuple[str, float, float, float]]], ...] = (
    ("spine05", _SPINE),
    ("spine04", _SPINE),
    ("spine03", _SPINE),
    ("spine02", _SPINE),
    ("spine01", _SPINE),
    ("neck01", _NECK),
    ("neck02", _NECK),
    ("neck03", _NECK),
    ("head", [("x", -20.0, 25.0, 0.0), ("z", -12.0, 12.0, 0.0), ("y", -25.0, 25.0, 0.0)]),
    ("clavicle.L", [("z", -5.0, 15.0, 0.0), ("y", -10.0, 10.0, 0.0)]),
    # Rest arms hang 45 degrees from the body: z lowers (-) or raises (+) them sideways, x swings them forward (-).
    ("upperarm01.L", [("x", -95.0, 45.0, 0.0), ("z", -38.0, 100.0, -25.0), ("upper_arm", -45.0, 45.0, 0.0)]),
    # The rest elbow is bent ~45 degrees; + bends further.
    ("lowerarm01.L", [("elbow", -40.0, 95.0, 10.0)]),
    ("lowerarm02.L", [("forearm", -40.0, 40.0, 0.0)]),
    ("wrist.L", [("palm", -45.0, 45.0, 0.0), ("elbow", -20.0, 20.0, 0.0)]),
    ("upperleg01.L", [("x", -95.0, 25.0, 0.0), ("z", -8.0, 35.0, 0.0), ("y", -30.0, 30.0, 0.0)]),
    ("lowerleg01.L", [("x", 0.0, 120.0, 5.0)]),
    ("foot.L", [("x", -25.0, 30.0, 0.0), ("z", -10.0, 10.0, 0.0)]),
)
# Finger curl (one DOF per finger, 0 = rest, 1 = fist) and the angle each phalanx takes at full curl.
FINGER_CURL = (-0.15, 1.0, 0.1)
PHALANX_DEG = {1: (20.0, 30.0, 35.0), 2: (70.0, 90.0, 60.0), 3: (70.0, 90.0, 60.0), 4: (70.0, 90.0, 60.0)}
PHALANX_DEG[5] = PHALANX_DEG[4]

_MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Dof:
    """One degree of freedom: `bone` turns about `axis` ([3] unit, body frame) by an angle in [lo, hi] degrees.

    `scale` maps the DOF value to degrees (1 for joints; the phalanx angle for a finger-curl DOF, whose value is a
    curl fraction shared by the finger's three bones).
    """

    name: str
    bone: int
    axis: tuple[float, float, float]
    lo: float
    hi: float
    neutral: float
    scale: float = 1.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _rodrigues(axes: np.ndarray, angles_rad: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] about unit `axes` [..., 3] by `angles_rad` [...]."""
    k = axes
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    skew = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(*k.shape[:-1], 3, 3)
    s, c = np.sin(angles_rad)[..., None, None], np.cos(angles_rad)[..., None, None]
    eye = np.eye(3, dtype=np.float64)
    return eye + s * skew + (1.0 - c) * (skew @ skew)


class Skeleton:
    """Anny's bones with bodymap's DOF table: turns pose vectors [B, D] into Anny bone rotations [B, J, 3, 3].

    Args:
        bone_labels: J Anny bone labels.
        bone_heads: [J, 3] float rest bone heads (body frame, metres), used to derive anatomical axes.
        bone_parents: J parent indices (-1 for the root).
    """

    def __init__(self, bone_labels: list[str], bone_heads: np.ndarray, bone_parents: list[int]) -> None:
        self.bone_labels = list(bone_labels)
        self.num_bones = len(bone_labels)
        index = {label: i for i, label in enumerate(bone_labels)}
        heads = np.asarray(bone_heads, np.float64)

        def head(label: str) -> np.ndarray:
            return heads[index[label]]

        # Anatomical axes of the left arm and hand from the rest skeleton (mirrored for the right side).
        upper = _unit(head("lowerarm01.L") - head("upperarm01.L"))
        fore = _unit(head("wrist.L") - head("lowerarm01.L"))
        across = _unit(head("finger2-1.L") - head("finger5-1.L"))  # index knuckle -> little-finger knuckle
        hand = _unit(head("finger3-1.L") - head("wrist.L"))
        palm_normal = _unit(np.cross(across, hand))
        axes = {
            "x": np.array([1.0, 0.0, 0.0]),
            "y": np.array([0.0, 1.0, 0.0]),
            "z": np.array([0.0, 0.0, 1.0]),
            "upper_arm": upper,
            "forearm": fore,
            "elbow": _unit(np.cross(upper, fore)),  # + moves the forearm away from the upper arm's line: more bend
            "palm": _unit(np.cross(hand, palm_normal)),
            "curl": across,
        }
        dofs: list[Dof] = []
        for bone, entries in JOINT_LIMITS:
            sides = [("L", False), ("R", True)] if bone.endswith(".L") else [("", False)]
            for side, mirror in sides:
                label = bone[:-1] + side if side else bone
                for axis_name, lo, hi, neutral in entries:
                    axis = axes[axis_name]
                    if mirror:
                        # A rotation mirrored through x -> -x turns about -M a by the same angle.
                        axis = -_MIRROR @ axis
                    dofs.append(Dof(f"{label}:{axis_name}", index[label], tuple(axis), lo, hi, neutral))
        for side, mirror in (("L", False), ("R", True)):
            axis = -_MIRROR @ axes["curl"] if mirror else axes["curl"]
            for finger in range(1, 6):
                for phalanx in range(3):
                    label = f"finger{finger}-{phalanx + 1}.{side}"
                    dofs.append(
                        Dof(
                            f"{label}:curl",
                            index[label],
                            tuple(axis),
                            *FINGER_CURL,
                            scale=PHALANX_DEG[finger][phalanx],
                        )
                    )
        self.dofs = dofs
        # Finger curls are one value per finger: the phalanx DOFs of a finger share it (see `expand`).
        self._finger_groups = [
            [i for i, d in enumerate(dofs) if d.name.startswith(f"finger{f}-") and d.name.split(".")[1][0] == s]
            for s in "LR"
            for f in range(1, 6)
        ]
        self.lo = np.array([d.lo for d in dofs])
        self.hi = np.array([d.hi for d in dofs])
        self.neutral = np.array([d.neutral for d in dofs])
        self._axes = np.array([d.axis for d in dofs])
        self._bones = np.array([d.bone for d in dofs])
        self._scale = np.array([d.scale for d in dofs])
        self.index = {d.name: i for i, d in enumerate(dofs)}
        self._legs = {
            side: [
                i
                for n, i in self.index.items()
                if n.startswith((f"upperleg01.{side}", f"lowerleg01.{side}", f"foot.{side}"))
            ]
            for side in "LR"
        }

    @property
    def num_dofs(self) -> int:
        return len(self.dofs)

    def rotations(self, pose: np.ndarray) -> np.ndarray:
        """Anny 'local-ref' bone rotations for pose vectors.

        Args:
            pose: [B, D] float DOF values (degrees; curl fractions for fingers), clipped to the limits.
        Returns:
            [B, J, 3, 3] float32 rotations in Anny's axes (identity for bones without DOFs).
        """
        pose = np.clip(np.asarray(pose, np.float64), self.lo, self.hi)
        batch = pose.shape[0]
        per_dof = _rodrigues(
            np.broadcast_to(self._axes, (batch, *self._axes.shape)), np.deg2rad(pose * self._scale)
        )  # (B, D, 3, 3)
        rot = np.tile(np.eye(3), (batch, self.num_bones, 1, 1))
        # DOFs of one bone compose in table order: R = R_1 R_2 R_3 (the last one acts first on the limb).
        for d, bone in enumerate(self._bones):
            rot[:, bone] = rot[:, bone] @ per_dof[:, d]
        # Body-frame rotations to Anny's frame: R_anny = A^T R_body A.
        from bodymap.template.anny_body import ANNY_TO_BODY  # (imports torch: only when posing)

        a = ANNY_TO_BODY.astype(np.float64)
        return (a.T @ rot @ a).astype(np.float32)

    def clip(self, pose: np.ndarray) -> np.ndarray:
        return np.clip(pose, self.lo, self.hi)

    def _fingers(self, rng: np.random.Generator, pose: np.ndarray, grip: float) -> None:
        for group in self._finger_groups:
            pose[group] = np.clip(grip + rng.normal(0.0, 0.15), *FINGER_CURL[:2])

    def random_pose(self, rng: np.random.Generator, spread: float) -> np.ndarray:
        """A natural random pose: each joint strays from neutral by up to `spread` (0..1) of its range.

        One leg supports the body (its joints stay near neutral), so poses look like standing, stepping, kicking or
        reaching rather than a uniform draw over all limits. Returns [D] float64.
        """
        amount = spread * rng.uniform(0.3, 1.0)
        target = rng.uniform(self.lo, self.hi)
        pose = self.neutral + amount * (target - self.neutral)
        leg = self._legs["L" if rng.random() < 0.5 else "R"]
        pose[leg] = self.neutral[leg] + 0.3 * (pose[leg] - self.neutral[leg])
        self._fingers(rng, pose, rng.uniform(-0.1, 0.9))
        return self.clip(pose)

    def crouch_pose(self, rng: np.random.Generator, spread: float) -> np.ndarray:
        """Squatting or crouching: both hips and knees flexed, the back leaning forward. Returns [D] float64."""
        pose = self.random_pose(rng, 0.5 * spread)
        depth = rng.uniform(0.4, 1.0)
        for side in "LR":
            pose[self.index[f"upperleg01.{side}:x"]] = -95.0 * depth + rng.normal(0.0, 5.0)
            pose[self.index[f"lowerleg01.{side}:x"]] = 120.0 * depth + rng.normal(0.0, 5.0)
            pose[self.index[f"foot.{side}:x"]] = -20.0 * depth
        for bone in ("spine05", "spine04", "spine03"):
            pose[self.index[f"{bone}:x"]] = rng.uniform(0.0, 12.0) * depth
        return self.clip(pose)

    def walk_pose(self, phase: float, stride: float = 1.0) -> np.ndarray:
        """One instant of the synthetic walk cycle, `phase` in radians (2 pi = one full cycle, left step first).

        Hips swing +-25 degrees in antiphase; each knee bends during its leg's swing; arms swing against the legs;
        the spine twists a little with the arms. `stride` (0..1.5) scales all amplitudes. Returns [D] float64.
        """
        pose = self.neutral.copy()
        s = np.sin(phase)
        for side, sign in (("L", 1.0), ("R", -1.0)):
            swing = sign * s  # > 0 while this leg is in front
            # Hip flexion leads the swing; the knee bends early in the swing (cos > 0 while the hip moves forward).
            forward_motion = sign * np.cos(phase)
            pose[self.index[f"upperleg01.{side}:x"]] = -25.0 * stride * swing - 3.0
            pose[self.index[f"lowerleg01.{side}:x"]] = 6.0 + 55.0 * stride * max(0.0, forward_motion + 0.2) ** 1.5
            pose[self.index[f"foot.{side}:x"]] = -10.0 * stride * forward_motion
            pose[self.index[f"upperarm01.{side}:x"]] = 22.0 * stride * swing
            pose[self.index[f"upperarm01.{side}:z"]] = -32.0
            pose[self.index[f"lowerarm01.{side}:elbow"]] = 12.0 + 15.0 * stride * max(0.0, -swing)
        for bone in ("spine05", "spine04", "spine03", "spine02", "spine01"):
            pose[self.index[f"{bone}:y"]] = 2.0 * stride * s
        for group in self._finger_groups:
            pose[group] = 0.25
        return self.clip(pose)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def interpolate_keys(keys: np.ndarray, key_frames: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Poses at `frames` from key poses, eased (smoothstep) between consecutive keys, so velocity is 0 at each key.

    Args:
        keys: [K, D] key poses; key_frames: [K] increasing frame numbers; frames: [T] frame numbers.
    Returns:
        [T, D] poses.
    """
    frames = np.asarray(frames, np.float64)
    seg = np.clip(np.searchsorted(key_frames, frames, side="right") - 1, 0, len(key_frames) - 2)
    span = (key_frames[seg + 1] - key_frames[seg]).astype(np.float64)
    w = smoothstep((frames - key_frames[seg]) / span)[:, None]
    return keys[seg] * (1.0 - w) + keys[seg + 1] * w


__all__ = ["JOINT_LIMITS", "Dof", "Skeleton", "interpolate_keys", "smoothstep"]
