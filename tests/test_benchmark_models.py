"""benchmarks/models.py runs against the library as it is (its proxy loss once imported a function that was gone)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_proxy_loss_trains_a_network(one_torch_thread) -> None:
    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = module.bench_model("bodymap_unet", batch=1, size=32, repeats=1, template=None)
    assert row["params"] > 0
    assert math.isfinite(row["train_ms_per_batch"]) and row["train_ms_per_batch"] > 0
