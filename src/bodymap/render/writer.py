"""Rendering and writing one work unit (a chunk of still images, or a video sequence) into an output directory.

Files go straight into the stage's temporary output directory (`bodymap.io.atomic_dir` renames it into place only
when everything succeeded), so individual files need no temporary names of their own. `.npz` files are written
with fixed zip timestamps, so the same params and seed give byte-identical outputs.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bodymap.render.coco import annotate_frame
from bodymap.render.flow import exact_flow
from bodymap.render.renderer import Frame, Renderer
from bodymap.render.scene import Degradation, Scene, sample_sequence, sample_still
from bodymap.render.settings import RenderSettings, Split

NPZ_LEVEL = 1  # zlib level: the GT maps compress ~10x at level 1 already; higher levels cost time for ~5%


def npz_bytes(arrays: dict[str, np.ndarray], level: int = NPZ_LEVEL) -> bytes:
    """A compressed .npz (loadable with np.load) with fixed timestamps, hence deterministic bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, array in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data.getvalue(), compresslevel=level)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def encode_image(rgb: np.ndarray, jpeg_quality: int | None = None) -> bytes:
    """PNG bytes of an RGB uint8 [H, W, 3] image, or JPEG at `jpeg_quality`."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if jpeg_quality is None:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])  # 2x faster than 3, 10% larger
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise OSError("cannot encode image")
    return buf.tobytes()


def degrade(image: np.ndarray, degradation: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Defocus blur and sensor noise (the coco-like split; JPEG artefacts come from the encoder)."""
    out = image
    if degradation.blur_sigma_px > 0:
        out = cv2.GaussianBlur(out, (0, 0), degradation.blur_sigma_px)
    if degradation.noise_std > 0:
        noise = rng.normal(0.0, degradation.noise_std * 255.0, out.shape)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out


def gt_arrays(frame: Frame) -> dict[str, np.ndarray]:
    """The dense GT of docs/formats.md."""
    return {
        "vertex": frame.vertex.astype(np.int32),
        "person": frame.person.astype(np.int16),
        "mask": frame.person >= 0,
        "chart": frame.chart.astype(np.uint8),
        "layer": frame.layer.astype(np.uint8),
        "depth": frame.depth.astype(np.float16),
    }


@dataclass
class ChunkResult:
    """What one work unit contributes to its split's JSON files and to the run's figures."""

    split: str
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    def count(self, key: str, value: float) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + float(value)


def _frame_stats(result: ChunkResult, frame: Frame) -> None:
    result.count("images", 1)
    result.count("people", len(frame.people))
    result.count("visible_people", len(np.unique(frame.person[frame.person >= 0])))
    result.count("pixels", frame.person.size)
    result.count("foreground_pixels", (frame.person >= 0).sum())
    result.count("garment_pixels", (frame.layer == 2).sum())
    result.count("hair_pixels", (frame.layer == 3).sum())


def _record(image_id: int, seed: list[int], scene: Scene, frame: Frame, files: dict[str, str]) -> dict:
    return {
        "image_id": image_id,
        **files,
        "seed": seed,
        "people": [p.record() for p in scene.people],
        "camera": frame.camera.record(),
        "lighting": scene.lighting.record(),
        "degradation": {
            "blur_sigma_px": round(scene.degradation.blur_sigma_px, 4),
            "noise_std": round(scene.degradation.noise_std, 5),
            "jpeg_quality": scene.degradation.jpeg_quality,
        },
    }


def render_stills(
    renderer: Renderer, settings: RenderSettings, split: Split, items: range, pool: list[int], root: Path
) -> ChunkResult:
    """Render and write still images `items` of `split` (ids = index + 1) under `root`."""
    result = ChunkResult(split.name)
    seeds = [[settings.seed, split.code, i] for i in items]
    scenes = [
        sample_still(np.random.default_rng(s), renderer.skeleton, pool, split.style, settings.cameras, settings.poses)
        for s in seeds
    ]
    for index, seed, scene, frame in zip(items, seeds, scenes, renderer.render_scenes(scenes), strict=True):
        image_id = index + 1
        name = f"{image_id:06d}"
        image = degrade(frame.image, scene.degradation, np.random.default_rng([*seed, 2]))
        file_name = f"images/{name}.{split.image_ext}"
        write_bytes(root / split.directory / file_name, encode_image(image, scene.degradation.jpeg_quality))
        write_bytes(root / split.gt_directory / "gt" / f"{name}.npz", npz_bytes(gt_arrays(frame)))
        h, w = frame.person.shape
        result.images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        annotations = annotate_frame(
            frame, renderer.template, np.random.default_rng([*seed, 1]), image_id, settings.points_per_person
        )
        result.annotations += annotations
        result.count("annotations", len(annotations))
        result.count("dp_points", sum(len(a.get("dp_x", [])) for a in annotations))
        result.records.append(_record(image_id, seed, scene, frame, {"file": file_name, "gt": f"gt/{name}.npz"}))
        _frame_stats(result, frame)
    return result


def render_sequence(
    renderer: Renderer, settings: RenderSettings, split: Split, frames: range, pool: list[int], root: Path
) -> ChunkResult:
    """Render and write frames `frames` (indices `sequence * nframes + frame`, all of one sequence): images, dense
    GT, exact flow both ways to the next frame, PoseTrack-style JSON.

    The whole sequence is sampled (cheap) so every piece sees the same motion; the frame after the piece is rendered
    too, for the flow. Image ids are `sequence * nframes + frame + 1`; `track_id` is the person's index.
    """
    result = ChunkResult(split.name)
    sequence, first = divmod(frames.start, split.frames)
    last = frames.stop - sequence * split.frames  # exclusive
    seed = [settings.seed, split.code, sequence]
    scenes = sample_sequence(
        np.random.default_rng(seed), renderer.skeleton, pool, settings.video, settings.cameras, settings.poses
    )
    count = len(scenes)
    rendered = renderer.render_scenes(scenes[first : min(last + 1, count)])
    base = root / split.directory
    for k in range(first, last):
        scene, frame = scenes[k], rendered[k - first]
        image_id = sequence * count + k + 1
        stem = f"{sequence:03d}/{k:04d}"
        write_bytes(base / "images" / f"{stem}.png", encode_image(frame.image))
        write_bytes(base / "gt" / f"{stem}.npz", npz_bytes(gt_arrays(frame)))
        if k + 1 < count:
            after = rendered[k + 1 - first]
            forward, forward_valid = exact_flow(frame, after)
            backward, backward_valid = exact_flow(after, frame)
            # float32: float16 would move targets near pixel borders into the neighbouring pixel.
            arrays = {
                "forward": forward,
                "forward_valid": forward_valid,
                "backward": backward,
                "backward_valid": backward_valid,
            }
            write_bytes(base / "flow" / f"{stem}.npz", npz_bytes(arrays))
        labelled = k % settings.labelled_every == 0
        h, w = frame.person.shape
        result.images.append(
            {
                "id": image_id,
                "file_name": f"images/{stem}.png",
                "width": w,
                "height": h,
                "vid_id": sequence,
                "frame_id": k,
                "nframes": count,
                "is_labeled": labelled,
                "ignore_regions_x": [],
                "ignore_regions_y": [],
            }
        )
        annotations = annotate_frame(
            frame,
            renderer.template,
            np.random.default_rng([*seed, k, 1]),
            image_id,
            settings.points_per_person,
            with_points=labelled,
            track_ids=list(range(len(scene.people))),
        )
        result.annotations += annotations
        result.count("annotations", len(annotations))
        result.count("dp_points", sum(len(a.get("dp_x", [])) for a in annotations))
        record = _record(image_id, seed, scene, frame, {"file": f"images/{stem}.png", "gt": f"gt/{stem}.npz"})
        record.update(vid_id=sequence, frame_id=k)
        result.records.append(record)
        _frame_stats(result, frame)
    return result


def render_chunk(
    renderer: Renderer,
    settings: RenderSettings,
    split: Split,
    chunk: int,
    pools: dict[str, list[int]],
    root: Path,
) -> ChunkResult:
    """Render work unit `chunk` of `split` (see `Split.chunks`) into `root`."""
    start = time.process_time()
    items = split.chunks()[chunk]
    pool = pools[split.pool]
    if split.is_video:
        result = render_sequence(renderer, settings, split, items, pool, root)
    else:
        result = render_stills(renderer, settings, split, items, pool, root)
    result.count("cpu_seconds", time.process_time() - start)  # this process's CPU time: speed on a busy machine
    return result


__all__ = ["ChunkResult", "degrade", "encode_image", "gt_arrays", "npz_bytes", "render_chunk"]
