"""The one training loop, used by `cse_init`, `pretrain` and `finetune`. It reads top to bottom.

torchrun-compatible DDP (gloo on CPU, NCCL on CUDA), AMP (float16 on CUDA, bfloat16 on CUDA or the CPU; the
losses in float32), gradient clipping, cosine schedule with linear warm-up, a NaN guard, atomic checkpoints every N
steps and at the end, and exact resume: every source of randomness is a function of (seed, step, rank) or (seed,
epoch, sample), so a run resumed from its last checkpoint ends with the same weights as an uninterrupted one.
Logging goes through `bodymap.tracking.Tracker`, which is a no-op off rank 0.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from bodymap.config import TrainParams
from bodymap.determinism import torch_threads
from bodymap.errors import BodymapError
from bodymap.io import atomic_path
from bodymap.log import progress
from bodymap.remote import checkpoint_store
from bodymap.storage import Storage
from bodymap.tracking import Tracker
from bodymap.train import distributed
from bodymap.train.checkpoint import (
    LAST,
    load_checkpoint,
    resume_problems,
    rng_state,
    run_hash,
    save_checkpoint,
    set_rng_state,
)

log = logging.getLogger(__name__)


class SampleDataset(Protocol):
    """What the loop trains on: `sample(index, rng)` returns one example as a dict of tensors."""

    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]: ...


# loss_fn(model, batch, generator) -> (total loss, {term: value}); the generator makes loss-side sampling
# (random pixels, reference points) a function of the step.
LossFn = Callable[[nn.Module, dict[str, torch.Tensor], torch.Generator], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainResult:
    step: int
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class _EpochSampler(Sampler[int]):
    """Deterministic shuffled keys `epoch * n + index`, this rank's share, from a given step onwards."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int, start_step: int) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_rank = n // world
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise BodymapError(
                f"training set too small: {n} examples for batch size {batch_size} on {world} process(es)"
            )
        self.start_step = start_step

    def __iter__(self) -> Iterator[int]:
        epoch, skip = divmod(self.start_step, self.batches_per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            order = torch.randperm(self.n, generator=g)[self.rank :: self.world][: self.per_rank]
            usable = order[: self.batches_per_epoch * self.batch_size]
            for index in usable[skip * self.batch_size :].tolist():
                yield epoch * self.n + index
            epoch, skip = epoch + 1, 0


class _Keyed(Dataset):
    """Turns a sampler key into (index, per-sample RNG), so augmentations do not depend on resume points."""

    def __init__(self, dataset: SampleDataset, seed: int) -> None:
        self.dataset, self.seed, self.n = dataset, seed, len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(key, self.n)
        return self.dataset.sample(index, np.random.default_rng([self.seed, epoch, index]))


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up to 1 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_settings(config: TrainParams, device: torch.device) -> tuple[torch.dtype, bool, bool]:
    """(autocast dtype, whether autocast is on, whether gradients are loss-scaled) for a run on `device`.

    float16 autocast runs on CUDA only (on the CPU the run stays float32) and needs loss scaling; bfloat16 has
    float32's range, so it runs on CUDA or the CPU without scaling.
    """
    dtype = AMP_DTYPES[config.amp_dtype]
    use_amp = config.amp and (device.type == "cuda" or dtype == torch.bfloat16)
    return dtype, use_amp, use_amp and dtype == torch.float16


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def train(
    model: nn.Module,
    dataset: SampleDataset,
    loss_fn: LossFn,
    config: TrainParams,
    out_dir: str | Path,
    model_name: str,
    model_args: dict[str, Any],
    params: dict[str, Any] | None = None,
    tracker: Tracker | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    restart: bool = False,
    store: str | None = None,
) -> TrainResult:
    """Train `model` on `dataset` for `config.steps` optimiser steps; resume from `out_dir/last.pt` if present.

    A checkpoint resumes only the run that wrote it: the same model name and arguments, the same params and
    training settings (`bodymap.train.checkpoint.run_hash`) and no more steps than this run has. Anything else is
    one error naming the file and each differing field with both values; `restart` begins again from step 0
    instead (the checkpoint is replaced at the first save).

    Args:
        model: a freshly built model (its weights are replaced on resume or by `init_state`).
        dataset: examples via `sample(index, rng)`; batches are stacked dicts of tensors.
        loss_fn: see `LossFn`.
        config: the loop's settings, a `train` params section; torch runs on `config.threads` CPU threads for the
            whole run (the weights depend on the count), restored afterwards.
        out_dir: checkpoint directory (`last.pt`, atomically and durably replaced every `checkpoint_every` steps).
        model_name, model_args: stored in checkpoints so the model can be rebuilt without the config.
        params: resolved parameters stored in checkpoints.
        tracker: MLflow run to log to (only rank 0 logs).
        init_state: starting weights (e.g. the pretrained model for fine-tuning), ignored when resuming.
        on_step: called after every step with (step, loss terms) — progress hooks, tests.
        restart: ignore any checkpoint (local or on the store) and train from step 0.
        store: an `s3://` directory that keeps `last.pt` beyond this machine: rank 0 publishes every checkpoint
            there, and a run that starts without a local checkpoint resumes from the store's (a preempted pod
            restarts with an empty disk). Default: the s3:// `--model-dir` this process was given
            (`bodymap.remote.checkpoint_store`).
    """
    with torch_threads(config.threads):  # the weights depend on the count: fixed by the params
        start_time = time.monotonic()
        out_dir = Path(out_dir)
        store = store if store is not None else checkpoint_store(out_dir)
        dist_info = distributed.setup(config.device)
        device = dist_info.device
        tracker = tracker if (tracker is not None and dist_info.is_main) else Tracker(enabled=False)
        amp_dtype, use_amp, use_scaler = amp_settings(config, device)

        # Model, optimiser, schedule.
        model = model.to(device)
        if init_state is not None:
            model.load_state_dict(init_state)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_with_warmup(s, config.steps, config.warmup_steps)
        )
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

        # Resume from the last checkpoint of this run, if any (fetched from the store when the disk has none).
        start_step = 0
        ckpt_path = out_dir / LAST
        this_run = run_hash(params or {}, config.model_dump())
        state = None if restart else _existing_checkpoint(ckpt_path, store, device)
        if restart and (ckpt_path.exists() or store is not None):
            log.info(
                "--restart: training %s from step 0; the checkpoint in %s is replaced", model_name, store or out_dir
            )
        if state is not None:
            problems = resume_problems(
                state, model_name=model_name, model_args=model_args, run=this_run, steps=config.steps
            )
            if problems:
                raise BodymapError(
                    f"{ckpt_path}{f' (from {store})' if store else ''}: cannot resume this run from it: "
                    + "; ".join(problems)
                    + ". Pass --restart to train from step 0 (the checkpoint is replaced), or use another --model-dir"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):  # empty when saved without loss scaling (CPU, bfloat16)
                scaler.load_state_dict(state["scaler"])
            start_step = int(state["step"])
            log.info("resuming from %s at step %d of %d", ckpt_path, start_step, config.steps)
        if dist_info.distributed:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        # Data: deterministic keys from the resume step onwards, this rank's share.
        sampler = _EpochSampler(
            len(dataset), config.batch_size, config.seed, dist_info.rank, dist_info.world_size, start_step
        )
        loader = DataLoader(
            _Keyed(dataset, config.seed),
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=config.workers > 0,
        )
        if state is None:  # the checkpoints store these states: seeded, so the same run writes the same bytes
            global_seed = (config.seed * 1_000_003 + dist_info.rank) % 2**32
            random.seed(global_seed)
            np.random.seed(global_seed)
        batches = iter(loader)
        if state is not None:
            # After the loader's iterator took its seed: from here on the global RNGs continue as the saved run's.
            _restore_rng(state.get("rng"), dist_info, ckpt_path)

        def checkpoint(step: int) -> None:
            rngs = distributed.gather_objects(rng_state(), dist_info)  # every rank's, rank 0 gets the list
            if dist_info.is_main:
                save_checkpoint(
                    ckpt_path,
                    model=unwrap(model).state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict(),
                    rng=rngs,
                    step=step,
                    model_name=model_name,
                    model_args=model_args,
                    params=params or {},
                    run_hash=this_run,
                )
                if store is not None:
                    Storage().publish_file(ckpt_path, f"{store.rstrip('/')}/{LAST}")
            distributed.barrier(dist_info)

        history: list[dict[str, float]] = []
        window: dict[str, list[float]] = {}
        model.train()
        steps = range(start_step, config.steps)
        for step in (
            progress(steps, f"train {model_name}", total=len(steps), logger=log) if dist_info.is_main else steps
        ):
            # Every random draw of this step is a function of (seed, step, rank): resume-exact.
            torch.manual_seed(config.seed * 1_000_003 + step * 101 + dist_info.rank)
            # A CPU generator: the loss-side draws (pixels, references) are small and must match across devices.
            generator = torch.Generator().manual_seed(config.seed * 7_777_777 + step * 31 + dist_info.rank)
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}

            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                loss, terms = loss_fn(model, batch, generator)
            if not torch.isfinite(loss):
                detail = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
                raise BodymapError(
                    f"training {model_name}: non-finite loss at step {step} ({detail}); lower the learning rate "
                    f"({config.lr}) or check the inputs; the last good checkpoint is {ckpt_path}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            terms = {
                "loss": float(loss.detach()),
                **terms,
                "grad_norm": float(grad_norm),
                "lr": scheduler.get_last_lr()[0],
            }
            for key, value in terms.items():
                window.setdefault(key, []).append(value)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                means = {k: float(np.mean(v)) for k, v in window.items()}
                history.append({"step": done, **means})
                tracker.log_metrics({f"train/{k}": v for k, v in means.items()}, step=done)
                log.debug("step %d: %s", done, means)
                window = {}
            if done % config.checkpoint_every == 0 and done < config.steps:
                checkpoint(done)
            if on_step is not None:
                on_step(done, terms)

        checkpoint(config.steps)
        seconds = time.monotonic() - start_time
        if dist_info.is_main:
            log.info("trained %s to step %d in %.1f s", model_name, config.steps, seconds)
        return TrainResult(step=config.steps, checkpoint=ckpt_path, history=history, seconds=seconds)


def _existing_checkpoint(path: Path, store: str | None, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to resume from: `path`, else the store's `last.pt` (downloaded to `path`), else None."""
    if not path.exists() and store is not None:
        storage = Storage()
        uri = f"{store.rstrip('/')}/{LAST}"
        if storage.exists(uri):
            log.info("no local checkpoint: fetching %s", uri)
            storage.download_file(uri, path)
    return load_checkpoint(path, map_location=device) if path.exists() else None


def _restore_rng(saved: Any, dist_info: distributed.DistInfo, path: Path) -> None:
    """Set this rank's global RNGs to those saved with the checkpoint (one state per rank)."""
    if not isinstance(saved, list) or len(saved) != dist_info.world_size:
        have = len(saved) if isinstance(saved, list) else 0
        log.warning(
            "%s: RNG state of %d rank(s), this run has %d; per-step seeds still make the loop's draws exact",
            path, have, dist_info.world_size,
        )  # fmt: skip
        return
    set_rng_state(saved[dist_info.rank])


def write_history(path: Path, result: TrainResult) -> None:
    """The training curve as CSV (one row per logged step), for `dvc plots`."""
    keys = sorted({k for row in result.history for k in row} - {"step"})
    lines = [",".join(["step", *keys])]
    lines += [
        ",".join([str(row["step"]), *(f"{row.get(k, ''):.6g}" if k in row else "" for k in keys)])
        for row in result.history
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
