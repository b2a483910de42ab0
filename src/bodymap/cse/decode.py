"""Pixel embeddings → template vertices: the nearest vertex embedding, masked by the foreground, chunked."""

from __future__ import annotations

import torch


@torch.no_grad()
def nearest_vertex(
    pixel_embedding: torch.Tensor, vertex_embedding: torch.Tensor, vertex_chunk: int = 16384, pixel_chunk: int = 1024
) -> torch.Tensor:
    """Index of the nearest vertex embedding for each pixel embedding.

    Memory stays at pixel_chunk × vertex_chunk distances whatever the image and template sizes; one preallocated
    buffer is reused, because on CPU page-faulting a fresh [N, V] tensor per chunk cost as much as the product.

    Args:
        pixel_embedding: [N, D]; vertex_embedding: [V, D].
    Returns:
        [N] int64 vertex ids.
    """
    vertex_sq = vertex_embedding.pow(2).sum(1)  # (V,)
    table = vertex_embedding.T.contiguous()  # (D, V)
    n, v = pixel_embedding.shape[0], vertex_embedding.shape[0]
    out = torch.empty(n, dtype=torch.long, device=pixel_embedding.device)
    buffer = torch.empty(min(pixel_chunk, max(n, 1)), min(vertex_chunk, v), device=pixel_embedding.device)
    for p0 in range(0, n, pixel_chunk):
        e = pixel_embedding[p0 : p0 + pixel_chunk]
        best = torch.full((e.shape[0],), float("inf"), device=e.device)
        for v0 in range(0, v, vertex_chunk):
            # ||e||^2 is constant per pixel, so compare ||E||^2 - 2 e.E only.
            cols = min(vertex_chunk, v - v0)
            dist = buffer[: e.shape[0], :cols]
            torch.addmm(vertex_sq[v0 : v0 + cols], e, table[:, v0 : v0 + cols], alpha=-2.0, out=dist)
            value, index = dist.min(dim=1)
            better = value < best
            best = torch.where(better, value, best)
            out[p0 : p0 + e.shape[0]] = torch.where(better, index + v0, out[p0 : p0 + e.shape[0]])
    return out


@torch.no_grad()
def decode_image(
    embedding: torch.Tensor, fg_prob: torch.Tensor, vertex_embedding: torch.Tensor, vertex_chunk: int = 16384
) -> torch.Tensor:
    """One image's vertex map: nearest vertex for foreground pixels (p > 0.5), -1 elsewhere.

    Args:
        embedding: [D, H, W]; fg_prob: [H, W]; vertex_embedding: [V, D].
    Returns:
        [H, W] int64.
    """
    d, h, w = embedding.shape
    out = torch.full((h * w,), -1, dtype=torch.long, device=embedding.device)
    fg = torch.nonzero(fg_prob.flatten() > 0.5).squeeze(1)
    if fg.numel():
        pixels = embedding.reshape(d, h * w)[:, fg].T  # (N_fg, D)
        out[fg] = nearest_vertex(pixels, vertex_embedding, vertex_chunk)
    return out.view(h, w)
