"""Run under `torchrun --nproc_per_node=2`: trains the toy task with DDP and saves each rank's final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from toy_training import ToyData, toy_loss, toy_model

from bodymap.config import TrainParams
from bodymap.train import train
from bodymap.train.distributed import setup, teardown
from bodymap.train.loop import unwrap

if __name__ == "__main__":
    out = Path(sys.argv[1])
    model = toy_model()
    config = TrainParams(steps=6, batch_size=4, lr=1e-2, warmup_steps=0, checkpoint_every=3, device="cpu", seed=1)
    train(model, ToyData(), toy_loss, config, out, "toy", {})
    info = setup("cpu")
    torch.save(unwrap(model).state_dict(), out / f"rank{info.rank}.pt")
    teardown()
