"""CSE: the soft embedding loss, decoding, flip augmentation on the real template."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bodymap.cse.decode import decode_image, nearest_vertex
from bodymap.cse.loss import soft_embedding_loss
from bodymap.cse.model import CseNet, VertexEmbedding
from bodymap.cse.stage import crop_around_people
from bodymap.data.augment import flip


def _setup(template, n: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    embedding = VertexEmbedding(torch.from_numpy(template.lbo_basis), 16)
    vertices = torch.from_numpy(np.random.default_rng(seed).choice(template.num_vertices, n, replace=False))
    rows = torch.from_numpy(template.geodesics.rows(vertices.numpy()))
    return embedding, vertices, rows


def test_soft_loss_is_minimal_at_the_target_vertex_embedding(template):
    embedding, vertices, rows = _setup(template)
    with torch.no_grad():
        table = embedding()
    at_target = soft_embedding_loss(table[vertices], table, rows, 0.05, 0.05)
    for scale in (0.05, 0.2):
        moved = table[vertices] + scale * torch.randn_like(table[vertices])
        assert soft_embedding_loss(moved, table, rows, 0.05, 0.05) > at_target
    # Another vertex's embedding is worse than the right one.
    wrong = table[torch.roll(vertices, 1)]
    assert soft_embedding_loss(wrong, table, rows, 0.05, 0.05) > at_target


def test_soft_loss_is_differentiable_in_pixels_and_w(template):
    embedding, vertices, rows = _setup(template)
    pixels = torch.randn(len(vertices), 16, requires_grad=True)
    loss = soft_embedding_loss(pixels, embedding(), rows, 0.05, 0.1)
    loss.backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0
    # A gradient step on the pixels lowers the loss.
    with torch.no_grad():
        stepped = pixels - 0.5 * pixels.grad
    assert soft_embedding_loss(stepped, embedding(), rows, 0.05, 0.1) < loss


def _direct_soft_loss(pixels, vertices, rows, sigma_geodesic, sigma_embedding):
    """The loss as written in the CSE paper: every [N, V] term built out."""
    target = torch.softmax(-rows / sigma_geodesic, dim=1)
    sq = (pixels[:, None, :] - vertices[None, :, :]).pow(2).sum(-1)  # (N, V)
    return -(target * torch.log_softmax(-sq / sigma_embedding, dim=1)).sum(1).mean()


@pytest.mark.parametrize("sigma_embedding", [0.05, 0.2])
def test_soft_loss_equals_the_direct_form_in_value_and_gradients(template, sigma_embedding):
    embedding, vertices, rows = _setup(template, n=24, seed=3)
    torch.manual_seed(3)
    # Off the unit sphere too: the expanded form must not rely on the vertex embeddings' norm.
    table = embedding().detach().double() * (1.0 + 0.3 * torch.rand(template.num_vertices, 1).double())
    table.requires_grad_(True)
    pixels = torch.randn(len(vertices), 16, dtype=torch.float64, requires_grad=True)
    expected = _direct_soft_loss(pixels, table, rows.double(), 0.05, sigma_embedding)
    grads_expected = torch.autograd.grad(expected, (pixels, table))
    # The function computes in float32 (it casts), so compare at float32 tolerance.
    got = soft_embedding_loss(pixels, table, rows, 0.05, sigma_embedding)
    grads_got = torch.autograd.grad(got, (pixels, table))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    for g, e in zip(grads_got, grads_expected, strict=True):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))


def test_training_crops_keep_full_resolution_around_a_person():
    # Two 40 x 40 images: a person in the bottom-right corner of the first, none in the second.
    vertex = torch.full((2, 40, 40), -1, dtype=torch.int64)
    vertex[0, 30:38, 32:39] = torch.arange(56).view(8, 7)
    image = torch.rand(2, 3, 40, 40)
    batch = {"image": image, "vertex": vertex, "mask": (vertex >= 0).float(), "name": ["a", "b"]}
    out = crop_around_people(batch, 16, torch.Generator().manual_seed(0))
    assert out["image"].shape == (2, 3, 16, 16) and out["vertex"].shape == out["mask"].shape == (2, 16, 16)
    assert out["name"] == ["a", "b"]  # what is not an image-sized map passes through
    # The window is a slice of the image, pixels and labels together, shifted inside the image.
    assert (out["vertex"][0] >= 0).any()
    ys, xs = torch.nonzero(out["vertex"][0] == 0, as_tuple=True)
    y0, x0 = 30 - int(ys[0]), 32 - int(xs[0])
    assert 0 <= y0 <= 24 and 0 <= x0 <= 24
    assert torch.equal(out["image"][0], image[0, :, y0 : y0 + 16, x0 : x0 + 16])
    # The same generator state gives the same windows; a window as big as the image changes nothing.
    again = crop_around_people(batch, 16, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[k], again[k]) for k in ("image", "vertex", "mask"))
    assert crop_around_people(batch, 40, torch.Generator()) is batch


def test_decoding_returns_the_nearest_vertex_embedding():
    torch.manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(5000, 16), dim=1)
    vertices = torch.randperm(5000)[:50]
    noisy = table[vertices] + 1e-4 * torch.randn(50, 16)
    assert torch.equal(nearest_vertex(noisy, table, vertex_chunk=1000, pixel_chunk=7), vertices)
    # Brute force agrees on random queries.
    queries = torch.randn(40, 16)
    brute = torch.cdist(queries, table).argmin(1)
    assert torch.equal(nearest_vertex(queries, table, vertex_chunk=333), brute)
    # Background pixels decode to -1.
    image = table[vertices].T.reshape(16, 5, 10)
    prob = torch.zeros(5, 10)
    prob[:, :5] = 1.0
    out = decode_image(image, prob, table)
    assert torch.all(out[:, 5:] == -1) and torch.equal(out[:, :5].flatten(), vertices.view(5, 10)[:, :5].flatten())


def test_flip_maps_left_hand_pixels_to_right_hand_vertices(template):
    left_hand = np.flatnonzero(template.chart == 4)[:12]
    vertex = np.full((4, 6), -1, np.int32)
    vertex[:2, :6] = left_hand.reshape(2, 6)
    example = {"image": np.zeros((4, 6, 3), np.uint8), "vertex": vertex, "mask": (vertex >= 0).astype(np.float32)}
    flipped = flip(example, template.symmetry)
    assert np.all(template.chart[flipped["vertex"][:2]] == 3)  # right hand
    assert np.array_equal(flipped["vertex"][:2, ::-1], template.symmetry[left_hand].reshape(2, 6))
    assert np.all(flipped["vertex"][2:] == -1)


def test_cse_net_shapes(template):
    model = CseNet("resnet18", 16, torch.from_numpy(template.lbo_basis))
    out = model(torch.rand(2, 3, 64, 48))
    assert out["embedding"].shape == (2, 16, 64, 48) and out["fg_logits"].shape == (2, 2, 64, 48)
    assert torch.isfinite(out["embedding"]).all()


def _small_cse_checkpoint(path, num_vertices: int = 400, basis_k: int = 8):
    """A CSE checkpoint on a 400-vertex basis (inference speed is not what these tests measure)."""
    from bodymap.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    basis = torch.randn(num_vertices, basis_k)
    model = CseNet("resnet18", 16, basis)
    args = {"backbone": "resnet18", "embed_dim": 16, "num_vertices": num_vertices, "basis_k": basis_k}
    return save_checkpoint(path, model=model.state_dict(), model_name="cse", model_args=args, step=0)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("one_torch_thread")
def test_sharded_cse_inference_merges_into_the_unsharded_files(rendered, tmp_path):
    """Three shards of every set (batches of 3 dealt out: uneven shards, a short last batch, a shard with no image
    of a set) merge into byte-identical files; shards that do not make a whole run are refused."""
    from bodymap.cse.infer import infer_sets
    from bodymap.data.images import list_images
    from bodymap.errors import BodymapError
    from bodymap.shards import merge_shards

    checkpoint = _small_cse_checkpoint(tmp_path / "cse.pt")
    sets = {name: list_images(rendered / name) for name in ("train", "val", "test")}
    whole = tmp_path / "whole"
    counts = infer_sets(checkpoint, sets, whole, "t", "cpu", batch_size=3)
    assert counts == {"train": 16, "val": 4, "test": 6}
    shards = [tmp_path / f"shard{k}" for k in range(3)]
    for k, directory in enumerate(shards):
        infer_sets(checkpoint, sets, directory, "t", "cpu", batch_size=3, shard=k, num_shards=3)
    held = [len(json.loads((d / "val" / "predictions.json").read_text())["images"]) for d in shards]
    assert held == [3, 1, 0]
    assert merge_shards(shards[::-1], tmp_path / "merged", "cse") == counts
    assert _tree(tmp_path / "merged") == _tree(whole)
    with pytest.raises(BodymapError, match=r"expected shards 0\.\.2 exactly once, got \[0, 2\]"):
        merge_shards([shards[0], shards[2]], tmp_path / "bad", "cse")
    with pytest.raises(BodymapError, match="not a shard of `predictions`"):
        merge_shards([whole], tmp_path / "bad", "predictions")


@pytest.mark.usefixtures("one_torch_thread")
def test_cse_inference_in_worker_processes_writes_the_one_process_files(rendered, tmp_path):
    from bodymap.cse.infer import infer_sets, infer_sets_in_workers
    from bodymap.data.images import list_images

    checkpoint = _small_cse_checkpoint(tmp_path / "cse.pt")
    sets = {name: list_images(rendered / name) for name in ("train", "test")}
    infer_sets(checkpoint, sets, tmp_path / "one", "t", "cpu")
    counts = infer_sets_in_workers(checkpoint, sets, tmp_path / "two", "t", torch.device("cpu"), 16384, workers=2)
    assert counts == {"train": 16, "test": 6}
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")  # and no shard scratch left behind
