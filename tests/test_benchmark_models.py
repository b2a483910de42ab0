"""benchmarks/models.py runs against the library as it is (its proxy loss once imported a function that was gone)."""

from __future__ import annotations

import math

from conftest import load_script


def test_the_proxy_loss_trains_a_network(one_torch_thread) -> None:
    row = load_script("benchmarks/models.py").bench_model("bodymap_unet", batch=1, size=32, repeats=1, template=None)
    assert row["params"] > 0
    assert math.isfinite(row["train_ms_per_batch"]) and row["train_ms_per_batch"] > 0
