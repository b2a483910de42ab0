"""BodyMap networks: every registered model runs forward and backward; the registry, params edge and decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bodymap.config import ModelParams
from bodymap.errors import BodymapError
from bodymap.eval.predictions import PredictionSet, PredictionWriter
from bodymap.models import (
    DEFAULT_MODEL,
    MODELS,
    BodyMapOutput,
    add_decoded,
    build_model,
    create_model,
    cse_input,
    decode_vertices,
    list_models,
    model_args,
    params_overrides,
)
from bodymap.models.base import bin_values, colour_bins
from bodymap.models.inputs import WITHHELD_CSE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_MODELS = list_models(include_large=False)
TINY_VIT = {"depth": 2, "out_indices": [0, 1], "features": 16}  # behaviour tests need no full-size network


def _inputs(b: int = 2, h: int = 40, w: int = 56, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random RGB and CSE inputs; H, W deliberately not multiples of the networks' strides (padding is tested)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 4, h, w, generator=g)


def test_registry_lists_the_paper_variants() -> None:
    assert {"bodymap_vit", "bodymap_vit_rgb", "bodymap_vit_large"} <= set(MODELS)
    assert {"bodymap_resnet", "bodymap_efficientnet", "bodymap_unet"} <= set(MODELS)
    assert "bodymap_vit_large" not in SMALL_MODELS


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_forward_backward_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    image, cse = _inputs()
    out = model(image, cse)
    assert isinstance(out, BodyMapOutput)
    assert out.color_logits.shape == (2, 3, 256, 40, 56)
    assert out.silhouette.shape == (2, 1, 40, 56)
    assert torch.isfinite(out.color_logits).all() and torch.isfinite(out.silhouette).all()

    target = torch.randint(0, 256, (2, 3, 40, 56))
    loss = F.cross_entropy(out.color_logits.flatten(0, 1), target.flatten(0, 1)) + out.silhouette.sigmoid().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad[:10]}"


def test_rgb_variant_needs_no_cse_and_two_stream_does() -> None:
    image, cse = _inputs(b=1, h=32, w=32)
    rgb = create_model("bodymap_vit_rgb", **TINY_VIT)
    assert rgb.correspondence is None and not rgb.uses_cse
    assert rgb(image).color_logits.shape == (1, 3, 256, 32, 32)
    two_stream = create_model("bodymap_vit", **TINY_VIT)
    with pytest.raises(ValueError, match="CSE estimate"):
        two_stream(image)
    with pytest.raises(ValueError, match="cse must be"):
        two_stream(image, cse[:, :3])


def test_vit_runs_at_other_sizes_than_its_position_embedding() -> None:
    model = create_model("bodymap_vit", img_size=64, **TINY_VIT).eval()
    with torch.no_grad():
        for size in (32, 96):
            image, cse = _inputs(b=1, h=size, w=size)
            assert model(image, cse).silhouette.shape == (1, 1, size, size)


def test_two_encoders_have_separate_weights() -> None:
    model = create_model("bodymap_vit", **TINY_VIT)
    ids = {id(p) for p in model.appearance.parameters()}
    assert not ids & {id(p) for p in model.correspondence.parameters()}


def test_create_model_errors_name_what_is_valid() -> None:
    with pytest.raises(BodymapError, match="registered models: .*bodymap_vit"):
        create_model("bodymap_vitt")
    with pytest.raises(BodymapError, match="no setting \\['patch_size'\\].*encoder"):
        create_model("bodymap_resnet", patch_size=8)


def test_conv_stem_keeps_the_token_stride_and_every_parameter_learns() -> None:
    torch.manual_seed(0)
    model = create_model("bodymap_vit", **TINY_VIT, stem=[8, 16])
    plain = create_model("bodymap_vit", **TINY_VIT)
    image, cse = _inputs()
    x = torch.rand(2, 3, 64, 64)
    assert [f.shape for f in model.appearance(x)] == [f.shape for f in plain.appearance(x)]  # same token grid
    assert model.appearance.vit.patch_embed.proj.in_channels == 16
    out = model(image, cse)
    (out.silhouette.mean() + out.color_features.mean()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".stem." in n)
    with pytest.raises(ValueError, match="divisible"):
        create_model("bodymap_vit", **TINY_VIT, stem=[8] * 6)


def test_coarser_colour_bins_map_values_to_classes_and_back() -> None:
    values = torch.arange(256)
    assert torch.equal(bin_values(colour_bins(values, 256), 256), values)  # 256 bins: the identity
    bins = colour_bins(values, 64)
    assert bins.min() == 0 and bins.max() == 63 and torch.equal(torch.bincount(bins), torch.full((64,), 4))
    assert (bin_values(bins, 64) - values).abs().max() <= 2  # the bin centre is within half a bin
    model = create_model("bodymap_vit", **TINY_VIT, num_bins=64)
    out = model(*_inputs())
    assert out.color_logits.shape == (2, 3, 64, 40, 56)
    b, y, x = torch.zeros(5, dtype=torch.long), torch.arange(5), torch.arange(5)
    expected = bin_values(out.color_logits[0, :, :, y, x].argmax(dim=1).T, 64)
    assert torch.equal(out.colours_at(b, y, x), expected)


def test_model_args_rebuild_the_same_network_from_json() -> None:
    args = json.loads(json.dumps(model_args("bodymap_vit", depth=2, out_indices=[0, 1], features=16)))
    torch.manual_seed(0)
    a = create_model("bodymap_vit", **args)
    torch.manual_seed(0)
    b = create_model("bodymap_vit", **args)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert len(a.appearance.vit.blocks) == 2  # blocks after the last out index are pruned


def test_build_model_translates_params_at_the_edge() -> None:
    assert params_overrides(ModelParams()) == {}  # the defaults are the registry's
    assert model_args(ModelParams().name) == model_args(DEFAULT_MODEL)
    small = build_model(ModelParams(depth=2, out_indices=[0, 1], features=16))
    assert len(small.appearance.vit.blocks) == 2 and small.decoder.out_channels == 16
    resnet = build_model(ModelParams(name="bodymap_resnet", features=16))
    assert resnet.decoder.out_channels == 16
    with pytest.raises(BodymapError, match="model params: .*patch_size"):
        build_model(ModelParams(name="bodymap_unet", patch_size=8))


def test_pretrained_encoders_start_from_a_weights_file(tmp_path) -> None:
    """`pretrained: <file>`: both ViT encoders take the file's blocks as they are; the patch kernel (16 -> 8 px at
    `patch_size: 8`), the position embedding (14 x 14 -> 16 x 16 tokens) and the CSE stream's 4-channel stem are
    adapted; the decoder and heads stay as built; the stored model arguments do not name the file, so a checkpoint
    rebuilds without it."""
    import timm

    torch.manual_seed(7)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)  # all 12 blocks, a head
    weights = tmp_path / "vit_tiny.pth"
    torch.save(source.state_dict(), weights)
    torch.manual_seed(0)
    random_init = build_model(ModelParams(**TINY_VIT, patch_size=8))
    torch.manual_seed(0)
    model = build_model(ModelParams(**TINY_VIT, patch_size=8, pretrained=str(weights)))

    file = source.state_dict()
    for encoder in (model.appearance, model.correspondence):
        own = encoder.vit.state_dict()
        for key in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "cls_token"):
            assert torch.equal(own[key], file[key]), key
        assert own["pos_embed"].shape == (1, 1 + 16 * 16, 192) and own["patch_embed.proj.weight"].shape[-1] == 8
    stem = model.correspondence.vit.patch_embed.proj.weight
    assert stem.shape[1] == 4 and not torch.equal(stem, random_init.correspondence.vit.patch_embed.proj.weight)
    for key, value in random_init.state_dict().items():
        if not key.startswith(("appearance.", "correspondence.")):
            assert torch.equal(model.state_dict()[key], value), key  # decoder, fusion, heads: as built
    image, cse = _inputs()
    assert torch.isfinite(model(image, cse).silhouette).all()

    args = model_args("bodymap_vit", **params_overrides(ModelParams(**TINY_VIT, patch_size=8, pretrained=str(weights))))
    assert "pretrained" not in args
    weights.unlink()
    rebuilt = create_model("bodymap_vit", **args)
    rebuilt.load_state_dict(model.state_dict())  # what load_bodymap does with a checkpoint


def test_pretrained_weights_that_do_not_fit_are_clear_errors(tmp_path) -> None:
    import timm

    resnet = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), resnet)
    with pytest.raises(BodymapError, match=rf"model params: {resnet}: no weights for .* of encoder vit_tiny_patch16"):
        build_model(ModelParams(**TINY_VIT, pretrained=str(resnet)))
    small = tmp_path / "vit_small.pth"
    torch.save(timm.create_model("vit_small_patch16_224", pretrained=False, depth=2).state_dict(), small)
    with pytest.raises(BodymapError, match=rf"{small}: the weights do not fit encoder vit_tiny_patch16_224"):
        build_model(ModelParams(**TINY_VIT, pretrained=str(small)))
    with pytest.raises(BodymapError, match=r"/nowhere/vit\.pth: pretrained weights file not found"):
        build_model(ModelParams(**TINY_VIT, pretrained="/nowhere/vit.pth"))
    with pytest.raises(BodymapError, match="BodyMapUNet: its UNetEncoder encoders take no pretrained weights"):
        build_model(ModelParams(name="bodymap_unet", pretrained=str(resnet)))
    cnn = build_model(ModelParams(name="bodymap_resnet", features=16, pretrained=str(resnet)))  # a CNN stream
    assert torch.equal(cnn.appearance.net.state_dict()["layer1.0.conv1.weight"],
                       torch.load(resnet)["layer1.0.conv1.weight"])  # fmt: skip
    assert cnn.correspondence.net.state_dict()["conv1.weight"].shape[1] == 4


@pytest.mark.slow
def test_large_config_is_paper_scale_and_runs() -> None:
    model = create_model("bodymap_vit_large").eval()
    per_encoder = sum(p.numel() for p in model.appearance.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert per_encoder > 300e6 and total > 600e6  # BodyMap: ~600M parameters
    image, cse = _inputs(b=1, h=32, w=32)
    with torch.no_grad():
        out = model(image, cse)
    assert out.color_logits.shape == (1, 3, 256, 32, 32) and torch.isfinite(out.color_logits).all()


# ------------------------------------------------------------------------------------------------------- decoding
def test_cse_input_encodes_the_colour_code_and_foreground() -> None:
    colors = torch.tensor([[255, 0, 0], [0, 255, 51]], dtype=torch.uint8)
    vertex = torch.tensor([[0, -1], [1, 1]])
    score = torch.tensor([[0.9, 0.1], [0.8, 0.7]])
    x = cse_input(vertex, score, colors)
    assert x.shape == (4, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0, 0.9]))
    assert torch.allclose(x[:, 0, 1], torch.tensor([0.0, 0.0, 0.0, 0.1]))  # background: no colour
    assert torch.allclose(x[:, 1, 0], torch.tensor([0.0, 1.0, 0.2, 0.8]))
    assert cse_input(vertex[None], None, colors).shape == (1, 4, 2, 2)


def _peaked_outputs(vertex: np.ndarray, colors: np.ndarray, scale: float = 20.0) -> BodyMapOutput:
    """Outputs whose logits put (nearly) all mass on each pixel's vertex colour; background where vertex < 0."""
    target = torch.from_numpy(colors[np.maximum(vertex, 0)].astype(np.int64))  # (H, W, 3)
    logits = F.one_hot(target, 256).permute(2, 3, 0, 1).float() * scale  # (3, 256, H, W)
    silhouette = torch.from_numpy(np.where(vertex >= 0, scale, -scale).astype(np.float32))[None, None]
    return BodyMapOutput(color_logits=logits[None], silhouette=silhouette)


def test_decoding_round_trips_gt_vertices(template) -> None:
    rng = np.random.default_rng(0)
    vertex = rng.integers(0, template.num_vertices, size=(12, 16)).astype(np.int32)
    vertex[:3] = -1  # a background band
    decoded, score = decode_vertices(_peaked_outputs(vertex, template.colors), template)
    assert decoded.shape == (1, 12, 16) and decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded[0], vertex)
    assert score.shape == (1, 12, 16) and (score[0][vertex >= 0] > 0.5).all() and (score[0, :3] < 0.5).all()


def test_decoding_matches_the_template_decoder_on_arbitrary_colours(template) -> None:
    g = torch.Generator().manual_seed(1)
    out = BodyMapOutput(color_logits=torch.randn(2, 3, 256, 6, 7, generator=g), silhouette=torch.ones(2, 1, 6, 7))
    decoded, _ = decode_vertices(out, template)
    rgb = out.color_logits.argmax(2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(decoded, template.decode_colors(rgb))


def test_add_decoded_writes_a_dense_prediction_set_the_evaluator_reads(template, tmp_path) -> None:
    vertex = np.stack([np.full((4, 5), 7, np.int32), np.full((4, 5), -1, np.int32)])
    vertex[0, 0, 0] = -1
    one, two = (_peaked_outputs(v, template.colors) for v in vertex)
    outputs = BodyMapOutput(
        color_logits=torch.cat([one.color_logits, two.color_logits]),
        silhouette=torch.cat([one.silhouette, two.silhouette]),
    )
    writer = PredictionWriter(tmp_path, template_name=template.name, kind="dense")
    add_decoded(writer, [12, 13], outputs, template)
    writer.close()
    predictions = PredictionSet.open(tmp_path, num_vertices=template.num_vertices, template_name=template.name)
    assert predictions.kind == "dense" and [e.image_id for e in predictions.entries] == [12, 13]
    for entry, expected in zip(predictions.entries, vertex, strict=True):
        decoded, person, score = predictions.dense(entry, shape=(4, 5))
        np.testing.assert_array_equal(decoded, expected)
        assert person is None and score is not None and ((score > 0.5) == (expected >= 0)).all()
    with pytest.raises(ValueError, match="2 image ids"):
        add_decoded(writer, [1, 2], one, template)


def test_logits_at_pixels_equal_the_full_logits() -> None:
    """Training and decoding compute colour logits only where needed; they must equal the dense head's."""
    torch.manual_seed(0)
    model = create_model("bodymap_unet", widths=(8, 8, 8, 8, 8))
    out = model(torch.rand(2, 3, 32, 32), torch.rand(2, 4, 32, 32))
    b, y, x = torch.randint(0, 2, (20,)), torch.randint(0, 32, (20,)), torch.randint(0, 32, (20,))
    assert torch.allclose(out.logits_at(b, y, x), out.color_logits[b, :, :, y, x], atol=1e-5)
    assert out.color_features.shape[:1] + out.color_features.shape[2:] == (2, 32, 32)


@pytest.mark.parametrize("name", ["bodymap_vit", "bodymap_unet"])
def test_untrained_two_stream_model_reproduces_its_cse_input(name: str, template) -> None:
    """The residual CSE prior: before any training the decoded prediction is the CSE estimate it was given."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    g = torch.Generator().manual_seed(1)
    vertex = torch.randint(0, template.num_vertices, (1, 32, 32), generator=g)
    vertex[:, :, :8] = -1  # CSE background
    score = (vertex >= 0).float() * 0.9
    colors = torch.as_tensor(template.colors.astype(np.int64))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32, generator=g), cse_input(vertex, score, colors))
    decoded, _ = decode_vertices(out, template)
    fg = vertex[0].numpy() >= 0
    assert np.all(decoded[0][~fg] == -1)
    assert (decoded[0][fg] == vertex[0].numpy()[fg]).mean() > 0.95


def test_the_gated_prior_starts_as_the_prior_and_can_be_turned_down(template) -> None:
    """`cse_prior="gated"`: untrained, it copies the CSE estimate; with its gate closed the bonus is gone."""
    torch.manual_seed(0)
    model = create_model("bodymap_vit", cse_prior="gated", **TINY_VIT).eval()
    g = torch.Generator().manual_seed(1)
    vertex = torch.randint(0, template.num_vertices, (1, 32, 32), generator=g)
    colors = torch.as_tensor(template.colors.astype(np.int64))
    image, cse = torch.rand(1, 3, 32, 32, generator=g), cse_input(vertex, None, colors)
    with torch.no_grad():
        copied = (decode_vertices(model(image, cse), template)[0][0] == vertex[0].numpy()).mean()
        model.heads.prior_gate.bias.fill_(-30.0)
        closed = (decode_vertices(model(image, cse), template)[0][0] == vertex[0].numpy()).mean()
    assert copied > 0.95
    assert closed < 0.05


def test_without_the_cse_prior_the_estimate_is_only_encoded(template) -> None:
    """`cse_prior=False`: no residual bonus, so an untrained network does not copy its CSE input; CSE still matters."""
    torch.manual_seed(0)
    model = create_model("bodymap_vit", cse_prior=False, **TINY_VIT).eval()
    assert not hasattr(model.heads, "prior_scale")
    g = torch.Generator().manual_seed(1)
    vertex = torch.randint(0, template.num_vertices, (1, 32, 32), generator=g)
    colors = torch.as_tensor(template.colors.astype(np.int64))
    image, cse = torch.rand(1, 3, 32, 32, generator=g), cse_input(vertex, None, colors)
    with torch.no_grad():
        out = model(image, cse)
        other = model(image, cse.flip(-1))
    decoded, _ = decode_vertices(out, template)
    assert (decoded[0] == vertex[0].numpy()).mean() < 0.05
    assert not torch.allclose(out.color_logits, other.color_logits)


def test_withheld_cse_is_neutral_for_the_prior() -> None:
    """A withheld estimate (`augment.cse_dropout`) adds no colour bonus and does not move the silhouette."""
    torch.manual_seed(0)
    heads = create_model("bodymap_vit", **TINY_VIT).eval().heads
    x = torch.rand(1, 16, 4, 4)
    withheld = torch.full((1, 4, 32, 32), WITHHELD_CSE)
    with torch.no_grad():
        with_prior = heads(x, size=(32, 32), crop=(32, 32), prior=withheld)
        without = heads(x, size=(32, 32), crop=(32, 32), prior=None)
    assert torch.equal(with_prior.silhouette, without.silhouette)
    assert torch.equal(with_prior.color_logits, without.color_logits)
