"""Scene sampling: who is in an image, in which pose, where, seen by which camera, under which light.

Sampling is pure: a scene depends only on its random generator (seeded per image from the run seed, the split and
the image index), so any worker or shard renders the same image. Cameras are specified by orbit parameters and
resolved against the posed bodies at render time (`resolve_camera`). Paper Secs. 3.1 and 3.6 (crowds, crops).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bodymap.render.appearance import Lighting, sample_lighting
from bodymap.render.camera import Camera, look_at, orbit_origin
from bodymap.render.poses import Skeleton, interpolate_keys

# Walk cycle: metres travelled per cycle at stride 1 (two steps of ~0.65 m for hips swinging +-25 degrees).
CYCLE_LENGTH_M = 1.3


@dataclass(frozen=True)
class CameraRanges:
    """Uniform ranges [lo, hi] of the orbit camera; angles in degrees (azimuth 0 = in front of person 0)."""

    distance_m: tuple[float, float] = (2.2, 4.0)
    elevation_deg: tuple[float, float] = (-10.0, 25.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    roll_deg: tuple[float, float] = (-8.0, 8.0)
    fov_deg: tuple[float, float] = (35.0, 55.0)
    jitter: float = 0.15  # look-at offset, as a fraction of the half frame at the target


@dataclass(frozen=True)
class PoseMix:
    """Share of walk-cycle and crouching poses (the rest are free random poses) and how far free poses stray."""

    walk: float = 0.3
    crouch: float = 0.1
    spread: float = 0.6


@dataclass(frozen=True)
class SceneStyle:
    """How the scenes of one split look (people per image, framing, degradation)."""

    max_people: int = 3
    crowd_fraction: float = 0.25
    upper_body_fraction: float = 0.15
    distance_scale: tuple[float, float] = (1.0, 1.0)
    blur_probability: float = 0.0
    blur_sigma_px: tuple[float, float] = (0.5, 1.5)
    noise_std: float = 0.0
    jpeg_quality: tuple[float, float] | None = None


@dataclass
class PersonInstance:
    """One person in one image. pose: [D] float64 DOF vector (`Skeleton`); position: (x, z) on the ground, metres."""

    identity: int
    pose: np.ndarray
    yaw_deg: float
    position: tuple[float, float]
    motion: str

    def record(self) -> dict:
        return {
            "identity": self.identity,
            "motion": self.motion,
            "yaw_deg": round(self.yaw_deg, 4),
            "position": [round(float(p), 5) for p in self.position],
            "pose": np.round(self.pose, 3).tolist(),
        }


@dataclass
class CameraSpec:
    """Orbit parameters (world azimuth) around a target: the people's bounding-box centre, the upper body of
    person 0, or an explicit world point (video, for a steady camera)."""

    distance_m: float
    elevation_deg: float
    azimuth_deg: float
    roll_deg: float
    fov_deg: float
    jitter: tuple[float, float]
    upper_body: bool = False
    target: tuple[float, float, float] | None = None


@dataclass
class Degradation:
    blur_sigma_px: float = 0.0
    noise_std: float = 0.0
    jpeg_quality: int | None = None


@dataclass
class Scene:
    people: list[PersonInstance]
    camera: CameraSpec
    lighting: Lighting
    background_seed: int
    degradation: Degradation = field(default_factory=Degradation)


def _forward(elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    return -(orbit_origin(np.zeros(3), 1.0, elevation_deg, azimuth_deg))


def sample_pose(rng: np.random.Generator, skeleton: Skeleton, mix: PoseMix) -> tuple[np.ndarray, str]:
    r = rng.random()
    if r < mix.walk:
        pose = skeleton.walk_pose(rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2))
        # A little individual variation on top of the cycle.
        pose = skeleton.clip(pose + 0.25 * (skeleton.random_pose(rng, mix.spread) - skeleton.neutral))
        return pose, "walk"
    if r < mix.walk + mix.crouch:
        return skeleton.crouch_pose(rng, mix.spread), "crouch"
    return skeleton.random_pose(rng, mix.spread), "free"


def _positions(rng: np.random.Generator, count: int, min_gap: float = 0.7) -> list[tuple[float, float]]:
    """Ground positions: person 0 at the origin, the others around it at least `min_gap` apart."""
    out = [(0.0, 0.0)]
    radius = 0.9 + 0.45 * count
    while len(out) < count:
        for _ in range(100):
            r, a = rng.uniform(min_gap, radius), rng.uniform(0, 2 * np.pi)
            p = (r * np.cos(a), r * np.sin(a))
            if all(np.hypot(p[0] - q[0], p[1] - q[1]) >= min_gap for q in out):
                break
        out.append(p)  # after 100 tries the last draw is kept: crowded, but bodies may touch
    return out


def sample_still(
    rng: np.random.Generator,
    skeleton: Skeleton,
    pool: list[int],
    style: SceneStyle,
    cameras: CameraRanges,
    poses: PoseMix,
) -> Scene:
    """One still image: 1 person, or a crowd with probability `style.crowd_fraction`, identities from `pool`."""
    count = 1
    if style.max_people > 1 and rng.random() < style.crowd_fraction:
        count = int(rng.integers(2, style.max_people + 1))
    chosen = rng.choice(pool, size=count, replace=count > len(pool))
    people = []
    for identity, position in zip(chosen, _positions(rng, count), strict=True):
        pose, motion = sample_pose(rng, skeleton, poses)
        people.append(PersonInstance(int(identity), pose, float(rng.uniform(-180, 180)), position, motion))
    upper = count == 1 and rng.random() < style.upper_body_fraction
    distance = rng.uniform(*cameras.distance_m) * rng.uniform(*style.distance_scale) * (1 + 0.35 * (count - 1))
    if upper:
        distance *= rng.uniform(0.35, 0.5)
    elevation = rng.uniform(*cameras.elevation_deg)
    azimuth = people[0].yaw_deg + rng.uniform(*cameras.azimuth_deg)
    spec = CameraSpec(
        distance_m=float(distance),
        elevation_deg=float(elevation),
        azimuth_deg=float(azimuth),
        roll_deg=float(rng.uniform(*cameras.roll_deg)),
        fov_deg=float(rng.uniform(*cameras.fov_deg)),
        jitter=tuple(float(j) for j in rng.uniform(-cameras.jitter, cameras.jitter, 2)),
        upper_body=bool(upper),
    )
    lighting = sample_lighting(rng, _forward(elevation, azimuth))
    degradation = Degradation(
        blur_sigma_px=float(rng.uniform(*style.blur_sigma_px)) if rng.random() < style.blur_probability else 0.0,
        noise_std=float(rng.uniform(0.0, style.noise_std)),
        jpeg_quality=round(rng.uniform(*style.jpeg_quality)) if style.jpeg_quality is not None else None,
    )
    return Scene(people, spec, lighting, int(rng.integers(2**31)), degradation)


@dataclass(frozen=True)
class VideoStyle:
    frames: int = 121
    max_people: int = 2
    walk_fraction: float = 0.5
    key_every: int = 30  # frames between key poses of non-walking motion


def sample_sequence(
    rng: np.random.Generator,
    skeleton: Skeleton,
    pool: list[int],
    style: VideoStyle,
    cameras: CameraRanges,
    poses: PoseMix,
) -> list[Scene]:
    """A video: the same people moving smoothly (walk cycle, or eased key poses), a slowly drifting camera that
    follows them, constant lighting and background. Returns one Scene per frame."""
    frames = style.frames
    t = np.arange(frames, dtype=np.float64)
    count = int(rng.integers(1, style.max_people + 1))
    chosen = rng.choice(pool, size=count, replace=count > len(pool))
    walking = rng.random() < style.walk_fraction
    heading0 = rng.uniform(-180, 180)
    turn = rng.uniform(-0.4, 0.4)  # degrees per frame
    heading = heading0 + turn * t
    tracks = []  # per person: (poses [T, D], yaw [T], positions [T, 2], motion)
    starts = _positions(rng, count, min_gap=0.8)
    for identity, start in zip(chosen, starts, strict=True):
        if walking:
            cycle = rng.uniform(28, 38)  # frames per cycle (~1 s at 30 fps)
            stride = rng.uniform(0.7, 1.1)
            phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * t / cycle
            pose = np.stack([skeleton.walk_pose(p, stride) for p in phase])
            # Upper body and head keep an individual offset; the legs follow the cycle.
            offset = 0.2 * (skeleton.random_pose(rng, poses.spread) - skeleton.neutral)
            pose = skeleton.clip(pose + offset[None])
            speed = CYCLE_LENGTH_M * stride / cycle
            yaw = heading
            step = speed * np.stack([np.sin(np.deg2rad(yaw)), np.cos(np.deg2rad(yaw))], axis=1)
            pos = np.asarray(start)[None] + np.concatenate([np.zeros((1, 2)), np.cumsum(step[:-1], axis=0)])
            motion = "walk"
        else:
            n_keys = int(np.ceil((frames - 1) / style.key_every)) + 1
            keys = np.stack(
                [
                    skeleton.crouch_pose(rng, poses.spread)
                    if rng.random() < poses.crouch
                    else skeleton.random_pose(rng, poses.spread)
                    for _ in range(n_keys)
                ]
            )
            pose = interpolate_keys(keys, np.arange(n_keys) * style.key_every, t)
            yaw = rng.uniform(-180, 180) + rng.uniform(-0.5, 0.5) * t
            pos = np.broadcast_to(np.asarray(start), (frames, 2))
            motion = "keys"
        tracks.append((int(identity), pose, yaw, pos, motion))
    centre = np.mean([tr[3] for tr in tracks], axis=0)  # (T, 2) the group's ground centre
    # Video keeps whole people in view more often than stills: a third farther.
    d0, d1 = rng.uniform(*cameras.distance_m, 2) * 1.3 * (1 + 0.35 * (count - 1))
    e0 = rng.uniform(*cameras.elevation_deg)
    a0 = (tracks[0][2][0] if not walking else heading0) + rng.uniform(*cameras.azimuth_deg)
    orbit = rng.uniform(-0.5, 0.5)  # degrees per frame
    roll, fov = rng.uniform(*cameras.roll_deg), rng.uniform(*cameras.fov_deg)
    jitter = tuple(float(j) for j in rng.uniform(-cameras.jitter, cameras.jitter, 2))
    lighting = sample_lighting(rng, _forward(e0, a0))
    background_seed = int(rng.integers(2**31))
    height = rng.uniform(0.8, 1.0)
    scenes = []
    for k in range(frames):
        people = [
            PersonInstance(identity, pose[k], float(yaw[k]), (float(pos[k, 0]), float(pos[k, 1])), motion)
            for identity, pose, yaw, pos, motion in tracks
        ]
        spec = CameraSpec(
            distance_m=float(d0 + (d1 - d0) * k / max(frames - 1, 1)),
            elevation_deg=float(e0 + 3.0 * np.sin(2 * np.pi * k / max(frames, 2))),
            azimuth_deg=float(a0 + orbit * k),
            roll_deg=float(roll),
            fov_deg=float(fov),
            jitter=jitter,
            target=(float(centre[k, 0]), float(height), float(centre[k, 1])),
        )
        scenes.append(Scene(people, spec, lighting, background_seed))
    return scenes


def resolve_camera(spec: CameraSpec, lo: np.ndarray, hi: np.ndarray, upper_body: np.ndarray, size: int) -> Camera:
    """The camera of a scene once bodies are posed and placed.

    Args:
        lo, hi: [3] world bounding box of all people; upper_body: [3] world point between person 0's shoulders
            and nose (the crop target); size: image side in pixels.
    """
    if spec.target is not None:
        target = np.asarray(spec.target, np.float64)
    elif spec.upper_body:
        target = np.asarray(upper_body, np.float64)
    else:
        target = (np.asarray(lo) + np.asarray(hi)) / 2.0
    origin = orbit_origin(target, spec.distance_m, spec.elevation_deg, spec.azimuth_deg)
    # Off-centre framing: move the look-at point within the frame, in the camera's right/down plane.
    centred = look_at(origin, target, spec.roll_deg, spec.fov_deg, size, size)
    half = spec.distance_m * np.tan(np.deg2rad(spec.fov_deg) / 2.0)
    shift = centred.cam_to_world[:, 0] * spec.jitter[0] * half + centred.cam_to_world[:, 1] * spec.jitter[1] * half
    return look_at(origin, target + shift, spec.roll_deg, spec.fov_deg, size, size)


__all__ = [
    "CameraRanges",
    "CameraSpec",
    "Degradation",
    "PersonInstance",
    "PoseMix",
    "Scene",
    "SceneStyle",
    "VideoStyle",
    "resolve_camera",
    "sample_pose",
    "sample_sequence",
    "sample_still",
]
