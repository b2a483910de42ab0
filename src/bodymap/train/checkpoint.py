"""Checkpoints: model args + params + step + optimiser/scheduler/scaler/RNG state, written atomically and durably.

A checkpoint holds everything needed to (a) rebuild the model without the config (`model_name`, `model_args`),
and (b) resume training bit-for-bit: optimiser, scheduler and AMP scaler state and every RNG the loop uses
(Python's, numpy's, torch's and CUDA's, one set per rank). It also records what run it belongs to (`run_hash`),
so a resume into another model, other params or a shorter run is refused (`resume_problems`) instead of loading
weights that do not fit or relabelling the step.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodymap.errors import BodymapError
from bodymap.io import atomic_path

LAST = "last.pt"
# Loop settings that change how a run goes, not the weights it ends with: a resume may change them.
RESUME_NEUTRAL = frozenset({"log_every", "checkpoint_every", "workers", "device"})


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _without_neutral(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _without_neutral(v) for k, v in value.items() if k not in RESUME_NEUTRAL}
    if isinstance(value, list | tuple):
        return [_without_neutral(v) for v in value]
    return value


def run_hash(params: Mapping[str, Any], train_settings: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over what decides a run's weights: its params and the loop's settings, less the
    keys that only change how it runs (`RESUME_NEUTRAL`, at any depth)."""
    data = {"params": _without_neutral(params), "train": _without_neutral(train_settings)}
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resume_problems(
    state: Mapping[str, Any], *, model_name: str, model_args: Mapping[str, Any], run: str, steps: int
) -> list[str]:
    """Why a checkpoint cannot resume this run (empty when it can): each differing field with both values.

    Args:
        state: the loaded checkpoint; model_name, model_args: this run's network; run: this run's `run_hash`;
        steps: this run's total steps (a checkpoint past them belongs to a longer run).
    """
    problems = []
    if state["model_name"] != model_name:
        problems.append(f"field 'model_name': {state['model_name']!r} in the checkpoint, {model_name!r} in this run")
    theirs = json.dumps(state["model_args"], sort_keys=True, default=str)
    ours = json.dumps(dict(model_args), sort_keys=True, default=str)
    if theirs != ours:
        problems.append(f"field 'model_args': {theirs} in the checkpoint, {ours} in this run")
    if int(state["step"]) > steps:
        problems.append(f"field 'step': {int(state['step'])} in the checkpoint, past this run's {steps} steps")
    if "run_hash" in state and state["run_hash"] != run:
        problems.append(
            f"field 'run_hash': {state['run_hash']} in the checkpoint, {run} in this run (params or training "
            "settings differ)"
        )
    return problems


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """torch.save `state` to `path` through an fsynced temporary file, so a kill or a lost node mid-write leaves
    the old checkpoint.

    Saved through a file object: given a file name, torch names the zip's top folder after it, and the temporary
    name is random, so the same weights gave other bytes every time. Now the same state gives the same bytes.
    """
    path = Path(path)
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
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
