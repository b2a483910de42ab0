"""Mixed precision through the real model and losses: bfloat16 autocast on the CPU (the dtype path CUDA's float16
takes: half-precision features, float32 losses), and float16 / bfloat16 on CUDA where a GPU exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook

from bodymap.config import LossParams, TrainParams
from bodymap.data.rendered import DenseDataset, Source
from bodymap.losses.total import TemplateTensors, total_loss
from bodymap.models.base import BodyMapNet
from bodymap.models.registry import create_model
from bodymap.template import BodyTemplate
from bodymap.train import load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"depth": 2, "out_indices": [0, 1], "features": 16}  # the default two-stream ViT, two blocks deep


class HeadDtypes:
    """Records the dtype of the colour features of every BodyMap network forward pass while installed (a global
    forward hook, so the real stage code needs no test hook)."""

    def __init__(self) -> None:
        self.features: list[torch.dtype] = []

    def __enter__(self) -> HeadDtypes:
        def hook(module, args, output):
            if isinstance(module, BodyMapNet):
                self.features.append(output.color_features.dtype)

        self.handle = register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _dataset(template: BodyTemplate, rendered: Path, cse: Path) -> DenseDataset:
    return DenseDataset([Source.rendered(rendered / "train", cse)], template.symmetry, template.colors, template.chart)


def test_bfloat16_autocast_pretrain_steps_through_the_real_losses(
    template, template_dir, rendered, cse_train, tmp_path
):
    """`train_bodymap`, what `bodymap pretrain` runs, on the CPU under bfloat16 autocast: the network's features are
    half precision, the head projection and every loss term float32 (before the fix, F.linear failed at step 0 on
    BFloat16 features and the Float head weight, as CUDA float16 did)."""
    from bodymap.config import PretrainParams
    from bodymap.tracking import Tracker
    from bodymap.train.pretrain import train_bodymap

    p = PretrainParams.model_validate(
        {
            "model": SMALL,
            "losses": {"geodesic_pixels": 16, "consistency_references": 16},
            "augment": {"rotation_deg": 0.0},
            "train": {"steps": 3, "batch_size": 2, "warmup_steps": 0, "log_every": 1, "checkpoint_every": 3,
                      "device": "cpu", "amp": True, "amp_dtype": "bfloat16"},
        }
    )  # fmt: skip
    with HeadDtypes() as seen:
        result = train_bodymap(template, _dataset(template, rendered, cse_train), p, tmp_path, Tracker(enabled=False))
    assert seen.features == [torch.bfloat16] * 3  # autocast was on for every step
    assert [row["step"] for row in result.history] == [1, 2, 3]
    for row in result.history:
        for term in ("classification", "silhouette", "geodesic", "consistency"):
            assert torch.isfinite(torch.tensor(row[term])), (term, row)
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 3 and state["params"]["pretrain"]["train"]["amp_dtype"] == "bfloat16"
    assert all(v.dtype != torch.bfloat16 for v in state["model"].values())  # weights stay float32


def test_losses_are_float32_when_the_network_runs_in_half_precision(template):
    """The loss sees bfloat16 features; its value is float32 and within bfloat16's rounding of the float32 run."""
    torch.manual_seed(0)
    model = create_model("bodymap_vit", **SMALL)
    tensors = TemplateTensors.from_template(template)
    g = torch.Generator().manual_seed(0)
    vertex = torch.randint(0, template.num_vertices, (2, 32, 32), generator=g)
    vertex[:, :8] = -1
    batch = {
        "image": torch.rand(2, 3, 32, 32, generator=g),
        "cse": torch.rand(2, 4, 32, 32, generator=g),
        "vertex": vertex,
        "mask": (vertex >= 0).float(),
    }
    plain, _ = total_loss(model(batch["image"], batch["cse"]), batch, LossParams(), tensors, torch.Generator())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(batch["image"], batch["cse"])
        half, _ = total_loss(outputs, batch, LossParams(), tensors, torch.Generator())
    assert outputs.color_features.dtype == torch.bfloat16 and half.dtype == torch.float32
    assert float(half.detach()) == pytest.approx(float(plain.detach()), rel=0.05)
    half.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def _cuda_run(template, rendered, cse, out: Path, amp_dtype: str, steps: int = 4):
    torch.manual_seed(0)
    model = create_model("bodymap_vit", **SMALL)
    tensors = TemplateTensors.from_template(template, "cuda")

    def loss_fn(net, batch, generator):  # pretrain's `bodymap_loss`
        return total_loss(net(batch["image"], batch.get("cse")), batch, LossParams(), tensors, generator)

    config = TrainParams(steps=steps, batch_size=2, lr=1e-3, warmup_steps=0, log_every=1, checkpoint_every=steps,
                         device="cuda", amp=True, amp_dtype=amp_dtype)  # fmt: skip
    with HeadDtypes() as seen:
        result = train(model, _dataset(template, rendered, cse), loss_fn, config, out, "bodymap_vit", SMALL)
    return result, seen.features


@pytest.mark.gpu
@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_cuda_amp_trains_through_the_real_losses(template, rendered, cse_train, tmp_path, amp_dtype):
    result, features = _cuda_run(template, rendered, cse_train, tmp_path, amp_dtype)
    assert features == [getattr(torch, amp_dtype)] * 4
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    scaler = load_checkpoint(result.checkpoint)["scaler"]
    assert bool(scaler) == (amp_dtype == "float16")  # loss scaling for float16 only
