"""A toy regression task for loop tests, importable by the torchrun script and by pytest."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bodymap.config import TrainParams

# 12 steps, a checkpoint every 4: what the resume tests interrupt.
TOY_CONFIG = TrainParams(steps=12, batch_size=8, lr=2e-2, warmup_steps=2, checkpoint_every=4, log_every=2, device="cpu")


class ToyData:
    """y = x @ w_true + noise; `sample` adds per-sample noise from the RNG it is given (like an augmentation)."""

    def __init__(self, n: int = 64, dim: int = 8) -> None:
        rng = np.random.default_rng(123)
        self.x = rng.normal(size=(n, dim)).astype(np.float32)
        self.w = rng.normal(size=(dim, 1)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        x = self.x[index] + rng.normal(scale=0.01, size=self.x.shape[1]).astype(np.float32)
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(self.x[index] @ self.w)}


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))


def toy_loss(model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
    # A random subset of the batch, drawn from the step's generator, as real losses sample pixels.
    keep = torch.randperm(len(batch["x"]), generator=generator)[: max(1, len(batch["x"]) - 1)]
    loss = ((model(batch["x"][keep]) - batch["y"][keep]) ** 2).mean()
    return loss, {"mse": float(loss.detach())}
