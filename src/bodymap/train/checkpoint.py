"""Checkpoints: model args + params + step + optimiser/scheduler/scaler/RNG state, written atomically.

A checkpoint holds everything needed to (a) rebuild the model without the config (`model_name`, `model_args`),
and (b) resume training bit-for-bit: optimiser, scheduler and AMP scaler state and every RNG the loop uses.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodymap.errors import BodymapError
from bodymap.io import atomic_path

LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """torch.save `state` to `path` through a temporary file, so a kill mid-write leaves the old checkpoint.

    Saved through a file object: given a file name, torch names the zip's top folder after it, and the temporary
    name is random, so the same weights gave other bytes every time. Now the same state gives the same bytes.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; a clear error when the file is missing or not one."""
    path = Path(path)
    if not path.exists():
        raise BodymapError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise BodymapError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("model", "model_name", "model_args", "step"):
        if key not in state:
            raise BodymapError(f"{path}: field '{key}': missing; expected a bodymap training checkpoint")
    return state
