"""Render throughput: images per second at 256 x 256 for single-person and crowd scenes, GT and writing included.

    .venv/bin/python benchmarks/render.py                          # template data/template, 2 workers, 96 images
    .venv/bin/python benchmarks/render.py --workers 1 --images 48  # one process
    .venv/bin/python benchmarks/render.py --size 128 --json        # the default pipeline's size, JSON output

Each figure is the steady state of `--workers` processes: the worker pool is started and warmed up (template,
Anny, Warp kernels, one chunk per worker) before the clock starts, then `--images` images are rendered and written
(PNG, dense-GT npz, DensePose-COCO annotations). Start-up, a few seconds per worker, is reported apart. Target on
2 cores: >= 30 images/s single-person (issue 4). On a shared machine wall-clock figures depend on the other jobs, so
the workers' CPU time per image is reported too, with the rate it gives on idle cores (workers / CPU time).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bodymap.config import RenderParams
from bodymap.render.run import job_runner
from bodymap.render.settings import STILL_CHUNK, build_settings


def settings_for(size: int, images: int, workers: int, crowd: bool):
    """Train-split-only settings: single people, or crowds of 2..4 in every image."""
    params = RenderParams.model_validate(
        {
            "image_size": size,
            "workers": workers,
            "train_images": images + workers * STILL_CHUNK,  # the first chunk of each worker is the warm-up
            "test_images": 0,
            "crowd_fraction": 1.0 if crowd else 0.0,
            "max_people": 4,
            "contact_sheet": 0,
            "coco_like": {"train_images": 0, "val_images": 0},
            "video": {"sequences": 0},
        }
    )
    return build_settings(params)


def measure(template: Path, size: int, images: int, workers: int, crowd: bool, repeats: int) -> dict:
    settings = settings_for(size, images, workers, crowd)
    chunks = [("train", k) for k in range(len(settings.split("train").chunks()))]
    warm, timed = chunks[:workers], chunks[workers:]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with job_runner(settings, template, workers) as run:
            list(run(warm, Path(tmp)))
            startup = time.perf_counter() - start
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                results = list(run(timed, Path(tmp)))
                best = min(best, time.perf_counter() - t0)
    rendered = sum(r.stats["images"] for r in results)
    people = sum(r.stats["people"] for r in results)
    cpu = sum(r.stats["cpu_seconds"] for r in results) / rendered
    return {
        "scene": "crowd" if crowd else "single",
        "size": size,
        "workers": workers,
        "images": int(rendered),
        "people_per_image": round(people / rendered, 2),
        "seconds": round(best, 2),
        "images_per_second": round(rendered / best, 1),
        "startup_seconds": round(startup, 1),
        # CPU time the workers spent per image: on a machine shared with other jobs, workers / cpu is the rate the
        # same cores would give if they were ours alone.
        "cpu_ms_per_image": round(1000 * cpu, 1),
        "images_per_second_if_idle": round(workers / cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, default=Path("data/template"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=96, help="timed images per scene kind")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    rows = [
        measure(args.template, args.size, args.images, args.workers, crowd, args.repeats) for crowd in (False, True)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"render at {args.size}x{args.size}, {args.workers} worker(s), GT and writing included")
    for r in rows:
        print(
            f"  {r['scene']:6s}  {r['images_per_second']:6.1f} images/s  ({r['images']} images, "
            f"{r['people_per_image']} people/image, {r['seconds']} s; start-up {r['startup_seconds']} s); "
            f"{r['cpu_ms_per_image']} CPU ms/image per worker = {r['images_per_second_if_idle']} images/s on idle cores"
        )


if __name__ == "__main__":
    main()
