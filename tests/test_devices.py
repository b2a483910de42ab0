"""Device selection, and the CUDA code paths: run on a GPU, skipped (not faked) without one.

scripts/gpu_check.sh runs the `gpu`-marked tests of this file and tests/test_amp.py on a machine with torch but not
the project's environment, so nothing imported here needs more than torch, timm, numpy, scipy, OpenCV and PyYAML.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import has_cuda, requires_cuda
from toy_training import ToyData, toy_loss, toy_model

from bodymap.config import TrainParams
from bodymap.errors import BodymapError
from bodymap.losses.total import TemplateTensors
from bodymap.train import train
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
    config = TrainParams(steps=20, batch_size=8, lr=1e-2, warmup_steps=0, device="cuda", amp=True, checkpoint_every=10)
    result = train(toy_model(), ToyData(), toy_loss, config, tmp_path, "toy", {})
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert "scaler" in torch.load(result.checkpoint, weights_only=False)


@requires_cuda
def test_cuda_ray_casting_matches_the_cpu(template):
    pytest.importorskip("warp", reason="Warp is not installed (a GPU machine with torch only: scripts/gpu_check.sh)")
    from bodymap.raycast import MeshQuery

    rng = np.random.default_rng(0)
    origins = np.tile(np.array([0.0, 0.0, 3.0], np.float32), (500, 1))
    directions = np.concatenate([rng.normal(0, 0.1, (500, 2)), -np.ones((500, 1))], axis=1).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    cpu = MeshQuery(template.vertices, template.faces, device="cpu").cast(origins, directions)
    gpu = MeshQuery(template.vertices, template.faces, device="cuda").cast(origins, directions)
    assert np.array_equal(cpu.face, gpu.face) and np.allclose(cpu.t, gpu.t, atol=1e-5)


@requires_cuda
def test_template_tensors_on_cuda_match_the_cpu(template) -> None:
    cpu, cuda = TemplateTensors.from_template(template), TemplateTensors.from_template(template, "cuda")
    vertex = torch.randint(0, template.num_vertices, (300,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(cuda.geodesic_rows(vertex.cuda()).cpu(), cpu.geodesic_rows(vertex))
    rgb = torch.randint(0, 256, (2000, 3), generator=torch.Generator().manual_seed(1))
    ours, tree = cuda.decode_colors(rgb.cuda()), cpu.decode_colors(rgb)
    assert ours.device.type == "cuda"
    colours = cpu.colors
    assert torch.equal(((rgb - colours[ours.cpu()]) ** 2).sum(1), ((rgb - colours[tree]) ** 2).sum(1))
