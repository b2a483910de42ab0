"""Sharded inference over image sets: one shard's batches in its own directory, and the merge that joins the shards
into exactly what one process writes. `bodymap cse_init` and `bodymap evaluate` use it (`--shard i --num-shards n`,
then `--merge SHARD_DIR...`), as `bodymap render` shards its work; locally their `workers` processes run the shards.

A shard directory holds `shard.json` (which shard, of how many, the batch size, and every set with its total image
count) and, per image set, a dense prediction set (docs/formats.md: `predictions.json` and one `.npz` per image)
of the shard's images. Batches are dealt out, not images (shard i gets batches i, i + n, ...), so every image is
computed in the batch it has in an unsharded run: the merged files are the same bytes as long as the processes
run with the same number of torch threads (CPU kernels sum in thread-count order; GPU kernels may differ in the
last bits anyway).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bodymap.errors import BodymapError, input_error
from bodymap.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

T = TypeVar("T")
SHARD_RECORD = "shard.json"
INDEX = "predictions.json"


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise BodymapError(f"--shard {shard} --num-shards {num_shards}: expected 0 <= shard < num-shards")


def shard_batches(items: Sequence[T], shard: int, num_shards: int, batch_size: int) -> list[T]:
    """The items of shard `shard`: batches shard, shard + num_shards, ... of `items` cut into `batch_size` batches.

    Cut into batches of `batch_size` again, they are exactly those batches (only the last batch of all is short).
    """
    check_shard(shard, num_shards)
    starts = range(shard * batch_size, len(items), num_shards * batch_size)
    return [item for start in starts for item in items[start : start + batch_size]]


def write_shard_record(
    directory: Path, *, kind: str, shard: int, num_shards: int, batch_size: int, sets: dict[str, int]
) -> None:
    """`shard.json`: what `merge_shards` needs to put the shards back together (`sets`: name -> total images)."""
    write_json(
        directory / SHARD_RECORD,
        {"kind": kind, "shard": shard, "num_shards": num_shards, "batch_size": batch_size, "sets": sets},
    )


def _records(shard_dirs: Sequence[Path], kind: str) -> list[dict[str, Any]]:
    records = []
    for directory in shard_dirs:
        path = Path(directory) / SHARD_RECORD
        if not path.is_file():
            raise BodymapError(f"{directory}: not a shard of `{kind}` (no {SHARD_RECORD})")
        record = read_json(path, "a shard record")
        if record.get("kind") != kind:
            raise input_error(path, None, "kind", f"expected {kind!r}, got {record.get('kind')!r}")
        records.append(record)
    first = records[0]
    for path, record in zip(shard_dirs, records, strict=True):
        for key in ("num_shards", "batch_size", "sets"):
            if record[key] != first[key]:
                raise input_error(
                    Path(path) / SHARD_RECORD, None, key, f"{record[key]!r}, but {first[key]!r} in {shard_dirs[0]}"
                )
    found = sorted(r["shard"] for r in records)
    if found != list(range(first["num_shards"])):
        raise BodymapError(f"expected shards 0..{first['num_shards'] - 1} exactly once, got {found}")
    return records


def merge_shards(shard_dirs: Sequence[Path], out: Path, kind: str) -> dict[str, int]:
    """Join the shards of one run into `out/<set>/` per set, each written atomically; returns set -> images.

    The index of a merged set lists its images in the unsharded order (the batches dealt back in turn).
    """
    records = _records(shard_dirs, kind)
    by_shard = {r["shard"]: Path(d) for r, d in zip(records, shard_dirs, strict=True)}
    n, batch = records[0]["num_shards"], records[0]["batch_size"]
    for name, total in records[0]["sets"].items():
        indexes = {s: read_json(d / name / INDEX, "a prediction index") for s, d in by_shard.items()}
        entries = {s: list(index["images"]) for s, index in indexes.items()}
        merged = []
        for b, start in enumerate(range(0, total, batch)):
            shard = b % n
            take = min(batch, total - start)
            merged += [(shard, e) for e in entries[shard][:take]]
            entries[shard] = entries[shard][take:]
        left = {s: len(e) for s, e in entries.items() if e}
        if len(merged) != total or left:
            held = sum(len(index["images"]) for index in indexes.values())
            raise BodymapError(f"set {name}: the shards hold {held} images, not the {total} of the set")
        head = {k: v for k, v in indexes[0].items() if k != "images"}
        with atomic_dir(out / name) as tmp:
            for shard, entry in merged:
                target = tmp / entry["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(by_shard[shard] / name / entry["file"], target)
            write_json(tmp / INDEX, {**head, "images": [e for _, e in merged]})
    log.info("merged %d shards into %s", n, out)
    return dict(records[0]["sets"])


def run_shards(worker: Callable[..., Any], shard_args: Sequence[tuple], workers: int) -> list[Any]:
    """`worker(*args)` for each shard, in `workers` spawned processes (in this one when workers is 1).

    Each process computes on as many torch threads as this one (the outputs depend on the count, so the shards
    match an unsharded run); their OpenMP threads wait passively, so processes sharing cores do not spin against
    each other.
    """
    if workers <= 1:
        return [worker(*args) for args in shard_args]
    import torch

    threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
        return pool.starmap(worker, shard_args)


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads)


__all__ = ["SHARD_RECORD", "check_shard", "merge_shards", "run_shards", "shard_batches", "write_shard_record"]
