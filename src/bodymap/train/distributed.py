"""Process-group set-up for torchrun-compatible DDP: gloo on CPU, NCCL on CUDA; device selection."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bodymap.errors import BodymapError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: world size, global rank, local rank, and its torch device."""

    world_size: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """'auto' → this rank's CUDA device when available, else CPU; 'cuda' without a GPU is an error.

    local_rank: default `LOCAL_RANK` (torchrun's), so everything a rank puts on the GPU (the model, the loss
    tables) lands on the same device, not all ranks' tables on cuda:0.
    """
    if device == "cpu":
        return torch.device("cpu")
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if device == "cuda":
        raise BodymapError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device("cpu")


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else run single-process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, dev)
    return DistInfo(world_size=world_size, rank=rank, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def gather_objects(value: object, info: DistInfo) -> list[object]:
    """Every rank's `value` as a list indexed by rank, on every rank ([value] when single-process)."""
    if not info.distributed:
        return [value]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out
