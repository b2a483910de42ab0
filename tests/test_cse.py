"""CSE: the soft embedding loss, decoding, flip augmentation on the real template."""

from __future__ import annotations

import numpy as np
import torch

from bodymap.cse.decode import decode_image, nearest_vertex
from bodymap.cse.loss import soft_embedding_loss
from bodymap.cse.model import CseNet, VertexEmbedding
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
