"""Device selection, and the CUDA code paths: run on a GPU, skipped (not faked) without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import has_cuda, requires_cuda
from toy_training import ToyData, toy_loss, toy_model

from bodymap.errors import BodymapError
from bodymap.train import TrainConfig, train
from bodymap.train.distributed import select_device


def test_auto_picks_cuda_only_when_present():
    assert select_device("auto").type == ("cuda" if has_cuda else "cpu")
    assert select_device("cpu").type == "cpu"


@pytest.mark.skipif(has_cuda, reason="checks the message shown on machines without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(BodymapError, match="device 'cuda' requested but torch sees no CUDA device"):
        select_device("cuda")


@requires_cuda
def test_amp_training_on_cuda(tmp_path):
    config = TrainConfig(steps=20, batch_size=8, lr=1e-2, device="cuda", amp=True, checkpoint_every=10)
    result = train(toy_model(), ToyData(), toy_loss, config, tmp_path, "toy", {})
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert "scaler" in torch.load(result.checkpoint, weights_only=False)


@requires_cuda
def test_cuda_ray_casting_matches_the_cpu(template):
    from bodymap.raycast import MeshQuery

    rng = np.random.default_rng(0)
    origins = np.tile(np.array([0.0, 0.0, 3.0], np.float32), (500, 1))
    directions = np.concatenate([rng.normal(0, 0.1, (500, 2)), -np.ones((500, 1))], axis=1).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    cpu = MeshQuery(template.vertices, template.faces, device="cpu").cast(origins, directions)
    gpu = MeshQuery(template.vertices, template.faces, device="cuda").cast(origins, directions)
    assert np.array_equal(cpu.face, gpu.face) and np.allclose(cpu.t, gpu.t, atol=1e-5)
