"""Render a whole dataset: plan the work, run it in worker processes (or one shard of it), write JSON and manifests.

Work units are fixed by the params (STILL_CHUNK images, or VIDEO_CHUNK frames of one sequence) and every unit
seeds its own randomness from (seed, split, index), so the bytes written do not depend on `workers` nor on sharding: a
cluster fans shards out (`--shard i --num-shards n`, each a valid partial output) and `merge_shards` joins them
into exactly what one machine would have written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bodymap.errors import BodymapError
from bodymap.io import atomic_dir, write_json, write_run_info
from bodymap.log import progress
from bodymap.raycast import warp_device
from bodymap.render.background import Backgrounds, list_background_images
from bodymap.render.coco import coco_document
from bodymap.render.contact import contact_sheet
from bodymap.render.identity import Identity, sample_identities
from bodymap.render.settings import RenderSettings
from bodymap.template.mesh import BodyTemplate

if TYPE_CHECKING:
    from bodymap.render.renderer import Renderer
    from bodymap.render.writer import ChunkResult

log = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}
# Up to this many identities, workers build every render mesh and BVH (~40 ms each) before rendering.
PREPARE_IDENTITIES = 64
# The last renderer built in this process, reused by later runs with the same template and people (tests,
# benchmarks and shards in one process skip the template load and Anny set-up).
_LAST: dict[tuple, Renderer] = {}


def _identities(settings: RenderSettings) -> tuple[list[Identity], dict[str, list[int]]]:
    """The run's people and their split pools (`sample_identities` on the settings): the same in every process."""
    return sample_identities(
        settings.seed,
        settings.identities,
        settings.val_fraction,
        settings.test_fraction,
        settings.shapes,
        settings.outfits,
    )


def _setup(settings: RenderSettings, template_dir: Path) -> dict[str, Any]:
    from bodymap.render.renderer import Renderer

    files = list_background_images(settings.background_dir) if settings.background_dir else None
    identities, pools = _identities(settings)
    npz = Path(template_dir) / "template.npz"
    key = (
        str(Path(template_dir).resolve()),
        npz.stat().st_mtime_ns if npz.exists() else 0,
        settings.image_size,
        settings.device,
        json.dumps([i.record() for i in identities], sort_keys=True),
    )
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = Renderer(BodyTemplate.load(template_dir), identities, settings.image_size, device=settings.device)
    renderer = _LAST[key]
    if settings.identities <= PREPARE_IDENTITIES:
        renderer.prepare()
    renderer.backgrounds = Backgrounds(files, settings.floor_probability)
    return {"renderer": renderer, "settings": settings, "pools": pools}


def _init_worker(settings: RenderSettings, template_dir: Path) -> None:
    import cv2
    import torch

    # Parallelism comes from the worker processes: threads inside each would only compete for the same cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        _WORKER.update(_setup(settings, template_dir))
    except Exception as exc:
        # A pool restarts a worker whose initializer fails, forever; fail its first job instead.
        _WORKER["error"] = exc


def _run(job: tuple[str, int, Path]) -> ChunkResult:
    from bodymap.render.writer import render_chunk

    if "error" in _WORKER:
        raise _WORKER["error"]
    split_name, chunk, root = job
    settings: RenderSettings = _WORKER["settings"]
    return render_chunk(_WORKER["renderer"], settings, settings.split(split_name), chunk, _WORKER["pools"], root)


@contextlib.contextmanager
def job_runner(
    settings: RenderSettings, template_dir: Path, workers: int
) -> Iterator[Callable[[list[tuple[str, int]], Path], Iterator[ChunkResult]]]:
    """A function rendering (split, chunk) jobs into a root directory, in order, with `workers` processes.

    With one worker the jobs run in this process. Worker processes are started with `spawn` (fresh interpreters:
    no forked torch or Warp state) and set themselves up once (template, Anny, renderer), so a runner is worth
    reusing across calls (the benchmark does).
    """
    if workers == 1:
        _WORKER.update(_setup(settings, template_dir))
        try:
            yield lambda jobs, root: map(_run, [(name, chunk, root) for name, chunk in jobs])
        finally:
            _WORKER.clear()
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(settings, template_dir)) as pool:
        yield lambda jobs, root: pool.imap(_run, [(name, chunk, root) for name, chunk in jobs])


def plan_jobs(settings: RenderSettings, shard: int = 0, num_shards: int = 1) -> list[tuple[str, int]]:
    """(split, chunk) work units of one shard: every `num_shards`-th unit of the run, starting at `shard`."""
    if not 0 <= shard < num_shards:
        raise BodymapError(f"--shard {shard}: expected 0 <= shard < --num-shards ({num_shards})")
    jobs = [(split.name, k) for split in settings.splits for k in range(len(split.chunks()))]
    return jobs[shard::num_shards]


def _split_files(settings: RenderSettings, root: Path, results: list[ChunkResult], extra: dict) -> dict[str, dict]:
    """Write each split's annotations.json and manifest.json; return per-split counts."""
    counts = {}
    for split in settings.splits:
        mine = [r for r in results if r.split == split.name]
        images = [i for r in mine for i in r.images]
        annotations = [a for r in mine for a in r.annotations]
        records = sorted((rec for r in mine for rec in r.records), key=lambda rec: rec["image_id"])
        (root / split.directory).mkdir(parents=True, exist_ok=True)
        write_json(
            root / split.directory / "annotations.json",
            coco_document(images, annotations, f"bodymap synthetic {split.name}"),
            indent=None,
        )
        manifest = {
            "split": split.name,
            "seed": settings.seed,
            "params_hash": settings.params_hash,
            "image_size": settings.image_size,
            "identities": split.pool,
            **extra,
            "images": records,
        }
        write_json(root / split.gt_directory / "manifest.json", manifest, indent=None)
        counts[split.name] = {"images": len(images), "annotations": len(annotations)}
    return counts


def _top_manifest(settings: RenderSettings, template: BodyTemplate, counts: dict, shard: tuple[int, int]) -> dict:
    identities, pools = _identities(settings)
    manifest = {
        "seed": settings.seed,
        "params_hash": settings.params_hash,
        "template": template.name,
        "image_size": settings.image_size,
        **{f"{name}_identities": pool for name, pool in pools.items()},
        "identities": [i.record() for i in identities],
        "splits": {
            s.name: {"directory": s.directory, "dense_gt": f"{s.gt_directory}/gt", **counts[s.name]}
            for s in settings.splits
        },
    }
    if shard[1] > 1:
        manifest["shard"] = list(shard)
    return manifest


def render_dataset(
    settings: RenderSettings, template_dir: Path, out: Path, shard: int = 0, num_shards: int = 1
) -> dict[str, Any]:
    """Render every split (or one shard of the work) into `out`, atomically. Returns the run's figures."""

    start = time.monotonic()
    # Configuration errors surface here, before any work or worker starts: the background folder, the template
    # (an Anny one), the Warp device.
    if settings.background_dir:
        list_background_images(settings.background_dir)
    template = BodyTemplate.load(template_dir)
    if template.meta.get("source") != "anny" or len(template.template_to_full) == 0:
        raise BodymapError(f"{template_dir}: the renderer needs a template built from Anny (template.source: anny)")
    warp_device(settings.device)
    jobs = plan_jobs(settings, shard, num_shards)
    workers = max(1, min(settings.workers, len(jobs)))
    with atomic_dir(out) as tmp, job_runner(settings, template_dir, workers) as run:
        results = list(progress(run(jobs, tmp), "render", total=len(jobs)))
        counts = _split_files(settings, tmp, results, {"shard": [shard, num_shards]} if num_shards > 1 else {})
        write_json(tmp / "manifest.json", _top_manifest(settings, template, counts, (shard, num_shards)))
        if settings.contact_sheet:
            contact_sheet(tmp, template, settings.contact_sheet, tmp / "contact_sheet.png")
        write_run_info(tmp, "render", settings.params)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    seconds = time.monotonic() - start
    stats: dict[str, float] = {}
    for r in results:
        for key, value in r.stats.items():
            stats[key] = stats.get(key, 0.0) + value
    images = int(stats.get("images", 0))
    return {
        **{f"{name}_images": c["images"] for name, c in counts.items()},
        "annotations": int(stats.get("annotations", 0)),
        "dp_points": int(stats.get("dp_points", 0)),
        "people_per_image": round(stats.get("people", 0) / max(images, 1), 3),
        "foreground_fraction": round(stats.get("foreground_pixels", 0) / max(stats.get("pixels", 1), 1), 4),
        "garment_fraction_of_foreground": round(
            stats.get("garment_pixels", 0) / max(stats.get("foreground_pixels", 1), 1), 4
        ),
        "hair_fraction_of_foreground": round(
            stats.get("hair_pixels", 0) / max(stats.get("foreground_pixels", 1), 1), 4
        ),
        "workers": workers,
        "seconds": round(seconds, 1),
        "images_per_second": round(images / max(seconds, 1e-9), 1),
        "cpu_ms_per_image": round(1000 * stats.get("cpu_seconds", 0) / max(images, 1), 1),
        "output_mb": round(size / 2**20, 1),
    }


def merge_shards(shard_dirs: list[Path], out: Path, template_dir: Path, contact_samples: int = 12) -> dict[str, Any]:
    """Join the shard outputs of one run into exactly the output one machine would have written."""

    manifests = []
    for d in shard_dirs:
        path = Path(d) / "manifest.json"
        if not path.exists():
            raise BodymapError(f"{path}: not a render shard (no manifest.json)")
        manifests.append(json.loads(path.read_text()))
    if len({(m["seed"], m["params_hash"]) for m in manifests}) != 1:
        raise BodymapError(f"{', '.join(map(str, shard_dirs))}: shards come from different runs (seed/params hash)")
    shards = sorted(tuple(m.get("shard", (0, 1))) for m in manifests)
    total = shards[0][1]
    if shards != [(i, total) for i in range(total)]:
        raise BodymapError(f"expected shards 0..{total - 1} of {total} exactly once, got {shards}")
    first = manifests[0]
    with atomic_dir(out) as tmp:
        for d in shard_dirs:
            shutil.copytree(d, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.json", "contact_sheet.png"))
        counts = {}
        for name, info in first["splits"].items():
            docs = [json.loads((Path(d) / info["directory"] / "annotations.json").read_text()) for d in shard_dirs]
            gt_dir = info["dense_gt"].removesuffix("/gt")
            parts = [json.loads((Path(d) / gt_dir / "manifest.json").read_text()) for d in shard_dirs]
            images = [i for doc in docs for i in doc["images"]]
            annotations = [a for doc in docs for a in doc["annotations"]]
            write_json(
                tmp / info["directory"] / "annotations.json",
                coco_document(images, annotations, docs[0]["info"]["description"]),
                indent=None,
            )
            manifest = {k: v for k, v in parts[0].items() if k not in ("shard", "images")}
            manifest["images"] = sorted((r for p in parts for r in p["images"]), key=lambda r: r["image_id"])
            write_json(tmp / gt_dir / "manifest.json", manifest, indent=None)
            counts[name] = {"images": len(images), "annotations": len(annotations)}
        top = {k: v for k, v in first.items() if k != "shard"}
        top["splits"] = {name: {**info, **counts[name]} for name, info in first["splits"].items()}
        write_json(tmp / "manifest.json", top)
        shutil.copy2(Path(shard_dirs[0]) / "run.yaml", tmp / "run.yaml")
        if contact_samples:
            contact_sheet(tmp, BodyTemplate.load(template_dir), contact_samples, tmp / "contact_sheet.png")
    return {f"{name}_images": c["images"] for name, c in counts.items()}


__all__ = ["job_runner", "merge_shards", "plan_jobs", "render_dataset"]
