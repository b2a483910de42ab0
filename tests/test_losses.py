"""BodyMap losses: each is zero (or minimal) at the GT and pulls the right way on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bodymap.config import LossParams, validate_params
from bodymap.errors import BodymapError
from bodymap.losses import (
    TemplateTensors,
    chart_weight_table,
    consistency_loss,
    geodesic_loss,
    pixel_classification_loss,
    pixel_weights,
    sample_pixels,
    soft_iou_loss,
    soft_targets,
    total_loss,
    vertex_log_probs,
)
from bodymap.models import BodyMapOutput, create_model
from bodymap.models.base import colour_bins

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLORS = torch.tensor([[10, 20, 30], [200, 100, 0], [10, 100, 255]])  # a 3-vertex toy colour code


def _one_hot_logits(colors: torch.Tensor, scale: float) -> torch.Tensor:
    """[N, 3] colour values -> [N, 3, 256] logits with `scale` on the given values, 0 elsewhere."""
    return F.one_hot(colors.long(), 256).float() * scale


def _peaked(vertex: torch.Tensor, colors: torch.Tensor, scale: float = 30.0) -> BodyMapOutput:
    """Outputs that put (nearly) all mass on the GT: vertex [B, H, W] (-1 background) -> BodyMapOutput."""
    logits = _one_hot_logits(colors[vertex.clamp_min(0)], scale)  # (B, H, W, 3, 256)
    silhouette = torch.where(vertex >= 0, 50.0, -50.0)[:, None].float()  # (B, 1, H, W)
    return BodyMapOutput(color_logits=logits.permute(0, 3, 4, 1, 2).contiguous(), silhouette=silhouette)


def _classification(color_logits: torch.Tensor, vertex: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`pixel_classification_loss` at the weighted pixels of [B, 3, K, H, W] logits, gathered as `total_loss` does
    (`BodyMapOutput.logits_at`); vertex [B, H, W] (-1 unlabelled) against the toy colour code."""
    b, y, x = torch.nonzero(weight > 0, as_tuple=True)
    outputs = BodyMapOutput(color_logits=color_logits, silhouette=torch.zeros(vertex.shape[0], 1, *vertex.shape[1:]))
    return pixel_classification_loss(outputs.logits_at(b, y, x), COLORS[vertex[b, y, x]], weight[b, y, x])


# ------------------------------------------------------------------------------------------------ classification
def test_pixel_weights_follow_labels_charts_and_confidence() -> None:
    vertex = torch.tensor([[[0, -1, 1, 2]]])
    chart = torch.tensor([[[1, 0, 3, 24]]], dtype=torch.uint8)  # torso, background, right hand, head
    table = chart_weight_table(hand_weight=2.0, head_weight=3.0)
    assert table.shape == (25,) and table[4] == 2.0 and table[23] == 3.0 and table[1] == 1.0
    w = pixel_weights(vertex, chart, table, confidence=torch.tensor([[[1.0, 1.0, 0.5, 1.0]]]))
    assert w.tolist() == [[[1.0, 0.0, 1.0, 3.0]]]
    assert pixel_weights(vertex, None, table).tolist() == [[[1.0, 0.0, 1.0, 1.0]]]


def test_classification_is_minimal_at_gt_and_pushes_towards_it() -> None:
    vertex = torch.tensor([[[0, 1], [2, -1]]])  # (1, 2, 2)
    weight = pixel_weights(vertex, None, chart_weight_table(1.0, 1.0))
    gt = _peaked(vertex, COLORS).color_logits
    assert _classification(gt, vertex, weight) < 1e-6
    logits = torch.zeros_like(gt, requires_grad=True)
    loss = _classification(logits, vertex, weight)
    assert loss.item() == pytest.approx(np.log(256), rel=1e-5)  # uniform over 256 values
    loss.backward()
    grad = logits.grad[0, :, :, 0, 0]  # (3, 256) at the pixel of vertex 0
    for c in range(3):
        assert grad[c, COLORS[0, c]] < 0  # raise the GT value's logit
        assert (np.delete(grad[c].numpy(), COLORS[0, c]) > 0).all()  # lower the others
    assert (logits.grad[0, :, :, 1, 1] == 0).all()  # background pixel: no colour supervision


def test_hand_pixels_weigh_hand_weight_times_more() -> None:
    vertex = torch.tensor([[[0, 0]]])
    chart = torch.tensor([[[1, 4]]])  # torso, left hand
    weight = pixel_weights(vertex, chart, chart_weight_table(hand_weight=2.5, head_weight=1.0))
    logits = torch.zeros(1, 3, 256, 1, 2, requires_grad=True)
    _classification(logits, vertex, weight).backward()
    ratio = logits.grad[..., 1].abs().sum() / logits.grad[..., 0].abs().sum()
    assert ratio.item() == pytest.approx(2.5, rel=1e-5)


def test_classification_without_labels_is_zero_and_differentiable() -> None:
    logits = torch.randn(1, 3, 256, 2, 2, requires_grad=True)
    vertex = torch.full((1, 2, 2), -1)
    loss = _classification(logits, vertex, pixel_weights(vertex, None, chart_weight_table(1, 1)))
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()


def test_soft_targets_are_gaussians_peaked_at_the_gt_value() -> None:
    target = torch.tensor([[100, 0, 255]])
    soft = soft_targets(target, torch.tensor([2.0, 0.0, 5.0]), 256)  # (1, 3, 256)
    assert torch.allclose(soft.sum(-1), torch.ones(1, 3))
    assert soft.argmax(-1).tolist() == [[100, 0, 255]]
    assert soft[0, 1, 0] == 1.0  # sigma 0: one-hot
    assert soft[0, 0, 98] == pytest.approx(soft[0, 0, 102].item()) and soft[0, 0, 98] > soft[0, 0, 97]


def test_soft_classification_is_zero_at_its_target_and_prefers_near_misses() -> None:
    target = torch.tensor([[120, 60, 200]])
    sigma = torch.tensor([3.0, 3.0, 3.0])
    weight = torch.ones(1)
    exact = soft_targets(target, sigma, 256).clamp_min(1e-30).log()  # finite logits
    assert pixel_classification_loss(exact, target, weight, sigma).item() == pytest.approx(0.0, abs=1e-5)
    near = _one_hot_logits(target + 2, 10.0)  # (1, 3, 256) peaked 2 values off
    far = _one_hot_logits((target + 128) % 256, 10.0)  # peaked 128 values off
    soft = pixel_classification_loss(near, target, weight, sigma), pixel_classification_loss(far, target, weight, sigma)
    assert soft[0] < soft[1]
    # One-hot cross-entropy cannot tell the two apart: that is what the soft targets are for.
    assert pixel_classification_loss(near, target, weight).item() == pytest.approx(
        pixel_classification_loss(far, target, weight).item()
    )
    logits = torch.zeros(1, 3, 256, requires_grad=True)
    pixel_classification_loss(logits, target, weight, sigma).backward()
    for c in range(3):
        assert logits.grad[0, c, target[0, c]] < 0  # raise the GT value ...
        assert logits.grad[0, c, target[0, c] + 1] < 0  # ... and its neighbours
        assert logits.grad[0, c, (target[0, c] + 100) % 256] > 0  # lower values far from it


def test_soft_targets_width_follows_the_surface_scale_of_each_channel() -> None:
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    colors = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    tensors = TemplateTensors(colors, vertices, geodesics=None)
    assert tensors.values_per_metre.tolist() == pytest.approx([255.0, 127.5, 510.0])


# ---------------------------------------------------------------------------------------------------- silhouette
def test_soft_iou_is_zero_at_gt_and_pushes_towards_it() -> None:
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    exact = torch.where(mask > 0, 50.0, -50.0)[:, None]
    assert soft_iou_loss(exact, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_iou_loss(-exact, mask).item() > 0.6
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    soft_iou_loss(logits, mask, weight=torch.tensor([[[1.0, 1.0, 1.0, 0.0]]]).view(1, 2, 2)).backward()
    g = logits.grad[0, 0]
    assert g[0, 0] < 0 and g[1, 0] < 0  # foreground: raise the logit
    assert g[0, 1] > 0  # background: lower it
    assert g[1, 1] == 0  # weight 0: ignored
    empty = torch.zeros(1, 2, 2)
    assert soft_iou_loss(torch.full((1, 1, 2, 2), -50.0), empty).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------------ geodesic
def test_vertex_log_probs_sum_the_channels() -> None:
    logits = torch.randn(4, 3, 256)
    logp = torch.log_softmax(logits, dim=-1)
    out = vertex_log_probs(logits, COLORS)
    assert out.shape == (4, 3)
    expected = logp[2, 0, 10] + logp[2, 1, 100] + logp[2, 2, 255]
    assert out[2, 2].item() == pytest.approx(expected.item(), rel=1e-6)


def test_sample_pixels_draws_valid_distinct_pixels_reproducibly() -> None:
    valid = torch.zeros(2, 5, 6, dtype=torch.bool)
    valid[0, 1:3, 2:5] = True  # 6 pixels
    valid[1, 4, 0] = True  # 1 pixel
    b, y, x = sample_pixels(valid, 4, torch.Generator().manual_seed(0))
    assert b.tolist().count(0) == 4 and b.tolist().count(1) == 1
    assert valid[b, y, x].all() and len({(int(i), int(j), int(k)) for i, j, k in zip(b, y, x, strict=True)}) == 5
    again = sample_pixels(valid, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip((b, y, x), again, strict=True))


def test_geodesic_loss_is_zero_at_gt_and_prefers_near_vertices(template) -> None:
    tt = TemplateTensors.from_template(template)
    gt = torch.tensor([100, 5000, 12000])
    rows = tt.geodesic_rows(gt)  # (3, V)
    assert rows.shape == (3, template.num_vertices) and (rows[torch.arange(3), gt] == 0).all()
    weight = torch.ones(3)

    at_gt = vertex_log_probs(_one_hot_logits(tt.colors[gt], 30.0), tt.colors).softmax(dim=1)
    assert geodesic_loss(at_gt, rows, weight).item() < 1e-3  # metres

    near = rows.masked_fill(rows == 0, np.inf).argmin(dim=1)  # closest other vertex
    far = rows.argmax(dim=1)
    loss_near = geodesic_loss(F.one_hot(near, template.num_vertices).float(), rows, weight)
    loss_far = geodesic_loss(F.one_hot(far, template.num_vertices).float(), rows, weight)
    assert 0 < loss_near < 0.05 < 0.5 < loss_far

    logits = torch.zeros(3, 3, 256, requires_grad=True)
    geodesic_loss(vertex_log_probs(logits, tt.colors).softmax(dim=1), rows, weight).backward()
    for i in range(3):
        for c in range(3):  # raising the GT colour's logit lowers the expected distance
            assert logits.grad[i, c, tt.colors[gt[i], c]] < 0


def test_consistency_is_zero_at_gt_and_pulls_towards_the_gt_layout(template) -> None:
    tt = TemplateTensors.from_template(template)
    v = template.num_vertices
    gt = torch.tensor([100, 5000, 9000, 12000])  # two pixels in each of two images
    image = torch.tensor([0, 0, 1, 1])
    rows = tt.geodesic_rows(gt)
    ones = torch.ones(4)
    # References: every pixel, predicted exactly.
    at_gt = consistency_loss(F.one_hot(gt, v).float(), rows, image, ones, rows, gt, image, ones)
    assert at_gt.item() == pytest.approx(0.0, abs=1e-6)

    # Pixel 0 predicted at a vertex far from its GT: moving its probability mass to the GT lowers the loss.
    wrong = rows[0].argmax()
    q = F.one_hot(torch.stack([wrong, gt[1], gt[2], gt[3]]), v).float().requires_grad_(True)
    loss = consistency_loss(q, rows, image, ones, rows, gt, image, ones)
    assert loss.item() > 0.05
    loss.backward()
    assert q.grad[0, gt[0]] < q.grad[0, wrong]  # directional derivative along (GT - wrong) is negative
    assert (q.grad[2:] == 0).all()  # image 1 is consistent and never paired with image 0


# --------------------------------------------------------------------------------------------------------- total
def _batch(template, b: int = 2, h: int = 12, w: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    vertex = np.full((b, h, w), -1, np.int64)
    vertex[:, 2:10, 3:8] = rng.integers(0, template.num_vertices, size=(b, 8, 5))
    chart = np.where(vertex >= 0, template.chart[np.maximum(vertex, 0)], 0)
    return {
        "image": torch.rand(b, 3, h, w),
        "cse": torch.rand(b, 4, h, w),
        "vertex": torch.from_numpy(vertex),
        "chart": torch.from_numpy(chart.astype(np.int64)),
        "mask": torch.from_numpy((vertex >= 0).astype(np.float32)),
        "weight": torch.ones(b, h, w),
    }


def test_a_losses_section_enables_at_least_one_term() -> None:
    with pytest.raises(ValueError, match="every loss weight is 0"):
        LossParams(classification=0.0, silhouette=0.0, geodesic=0.0, consistency=0.0)
    off = {"classification": 0.0, "silhouette": 0.0, "geodesic": 0.0, "consistency": 0.0}
    with pytest.raises(BodymapError, match="finetune.losses: every loss weight is 0"):
        validate_params({"finetune": {"losses": off}})


def test_total_loss_is_near_zero_at_gt(template) -> None:
    tt = TemplateTensors.from_template(template)
    batch = _batch(template)
    total, logged = total_loss(_peaked(batch["vertex"], tt.colors), batch, LossParams(), tt)
    assert set(logged) == {"total", "classification", "silhouette", "geodesic", "consistency"}
    assert all(value < 1e-3 for value in logged.values()), logged
    assert total.item() == pytest.approx(logged["total"])


def test_total_loss_skips_disabled_terms_and_is_reproducible(template) -> None:
    tt = TemplateTensors.from_template(template)
    batch = _batch(template)
    g = torch.Generator().manual_seed(3)
    outputs = BodyMapOutput(
        color_logits=torch.randn(2, 3, 256, 12, 10, generator=g), silhouette=torch.randn(2, 1, 12, 10, generator=g)
    )
    weights = LossParams(geodesic=0.0)
    _, logged = total_loss(outputs, batch, weights, tt, torch.Generator().manual_seed(1))
    assert "geodesic" not in logged and logged["consistency"] > 0
    _, again = total_loss(outputs, batch, weights, tt, torch.Generator().manual_seed(1))
    assert logged == again
    expected = logged["classification"] + logged["silhouette"] + 0.1 * logged["consistency"]
    assert logged["total"] == pytest.approx(expected, rel=1e-5)


def test_silhouette_is_supervised_on_the_background_of_pseudo_gt(template) -> None:
    # Pseudo-GT labels have zero correspondence confidence off the people; the silhouette must still learn there,
    # or fine-tuning teaches "everything is a person" (IoU AP fell to 0 before `mask_weight` split the two).
    tt = TemplateTensors.from_template(template)
    batch = _batch(template)
    batch["weight"] = batch["mask"].clone()
    everywhere = _peaked(batch["vertex"], tt.colors)
    everywhere = BodyMapOutput(
        color_logits=everywhere.color_logits, silhouette=torch.full_like(everywhere.silhouette, 20)
    )
    weights = LossParams(classification=0.0, geodesic=0.0, consistency=0.0)
    _, logged = total_loss(everywhere, batch, weights, tt)
    assert logged["silhouette"] > 0.5  # 40 of 120 pixels are the person
    batch["mask_weight"] = batch["mask"].clone()  # a label that knows nothing of the background
    _, logged = total_loss(everywhere, batch, weights, tt)
    assert logged["silhouette"] < 1e-3


@pytest.mark.parametrize("extra", [{}, {"num_bins": 64, "stem": [8]}], ids=["default", "64-bins-conv-stem"])
def test_total_loss_trains_a_real_model_end_to_end(template, extra) -> None:
    torch.manual_seed(0)
    tt = TemplateTensors.from_template(template)
    model = create_model("bodymap_vit", depth=2, out_indices=[0, 1], features=16, **extra)
    batch = _batch(template, h=16, w=16)
    total, logged = total_loss(model(batch["image"], batch["cse"]), batch, LossParams(label_sigma_cm=2.0), tt)
    total.backward()
    assert np.isfinite(logged["total"]) and logged["geodesic"] > 0.1  # an untrained map is far off
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_coarse_colour_bins_are_near_zero_loss_at_gt(template) -> None:
    """With 64 classes per channel the GT's bins are the target: logits peaked there give ~0 classification loss."""
    tt = TemplateTensors.from_template(template)
    batch = _batch(template)
    bins = colour_bins(tt.colors, 64)  # (V, 3)
    vertex = batch["vertex"]
    logits = F.one_hot(bins[vertex.clamp_min(0)], 64).float() * 30.0  # (B, H, W, 3, 64)
    silhouette = torch.where(vertex >= 0, 50.0, -50.0)[:, None].float()
    outputs = BodyMapOutput(color_logits=logits.permute(0, 3, 4, 1, 2).contiguous(), silhouette=silhouette)
    assert outputs.num_bins == 64
    _, logged = total_loss(outputs, batch, LossParams(), tt)
    assert logged["classification"] < 1e-3 and logged["silhouette"] < 1e-3, logged
    # Vertices that share the GT's three bins share its probability: the expected geodesic error is what the
    # coarser code cannot resolve, a couple of centimetres at 64 bins (docs: model params num_bins).
    assert 0 < logged["geodesic"] < 0.03, logged


def test_template_tensors_decode_like_the_template(template) -> None:
    tt = TemplateTensors.from_template(template)
    rgb = torch.randint(0, 256, (500, 3), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(tt.decode_colors(rgb).numpy(), template.decode_colors(rgb.numpy()))
    assert torch.equal(tt.decode_colors(tt.colors[:50]), torch.arange(50))


def test_template_tensors_gather_the_rows_the_template_gives(template) -> None:
    """The device-side geodesic table gives exactly `Geodesics.rows`, landmark (the test template) and dense."""
    from bodymap.template import Geodesics

    vertex = np.random.default_rng(0).integers(0, template.num_vertices, 200)
    tt = TemplateTensors.from_template(template)
    assert template.geodesics.mode == "landmarks"
    np.testing.assert_array_equal(tt.geodesic_rows(torch.from_numpy(vertex)).numpy(), template.geodesics.rows(vertex))
    v = 300
    rng = np.random.default_rng(1)
    dense = rng.random((v, v)).astype(np.float16)
    dense = np.minimum(dense, dense.T)
    np.fill_diagonal(dense, 0)
    geodesics = Geodesics(dense=dense)
    tt = TemplateTensors(template.colors[:v], template.vertices[:v], geodesics)
    ids = torch.from_numpy(rng.integers(0, v, 50))
    rows = tt.geodesic_rows(ids)
    assert rows.dtype == torch.float32
    np.testing.assert_array_equal(rows.numpy(), geodesics.rows(ids.numpy()))


def test_nearest_colour_finds_the_nearest_code_colour_on_the_device(template) -> None:
    """The accelerator's decoder (`nearest_colour`, run here on the CPU): every answer is at the k-d tree's colour
    distance, a code colour decodes to its own vertex, exact ties go to the lowest vertex id, autocast or not."""
    from bodymap.losses.total import nearest_colour

    tt = TemplateTensors.from_template(template)
    rgb = torch.randint(0, 256, (1500, 3), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        found = nearest_colour(rgb, tt._colours_t, tt._colour_sq, chunk=700).numpy()
    tree = template.decode_colors(rgb.numpy())
    colours = template.colors.astype(np.int64)
    distance = lambda ids: ((rgb.numpy() - colours[ids]) ** 2).sum(1)  # noqa: E731
    np.testing.assert_array_equal(distance(found), distance(tree))
    assert (found != tree).any()  # some exact ties, which the tree breaks otherwise
    all_d = ((rgb.numpy()[:, None] - colours[None]) ** 2).sum(-1)  # (1500, V)
    np.testing.assert_array_equal(found, all_d.argmin(1))  # numpy's arg min: the first (lowest) id of a tie
    own = nearest_colour(tt.colors[::97], tt._colours_t, tt._colour_sq)
    assert torch.equal(own, torch.arange(0, template.num_vertices, 97))


def test_total_loss_stays_float32_under_autocast(template) -> None:
    tt = TemplateTensors.from_template(template)
    batch = _batch(template)
    g = torch.Generator().manual_seed(4)
    outputs = BodyMapOutput(
        color_logits=torch.randn(2, 3, 256, 12, 10, generator=g), silhouette=torch.randn(2, 1, 12, 10, generator=g)
    )
    _, plain = total_loss(outputs, batch, LossParams(), tt, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, autocast = total_loss(outputs, batch, LossParams(), tt, torch.Generator().manual_seed(1))
    assert total.dtype == torch.float32 and autocast == pytest.approx(plain, rel=1e-6)
