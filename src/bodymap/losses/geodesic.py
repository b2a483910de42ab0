"""Geodesic loss (BodyMap Sec. 3.4) and the pairwise consistency regulariser (Eq. 2), made differentiable through a
soft assignment of each pixel's predicted colour distribution to the template vertices.

Soft assignment. The network predicts, per pixel, three independent distributions over colour values p_R, p_G, p_B.
The probability that the pixel decodes to vertex v (colour code c(v)) is taken as

    q(v) = softmax_v( log p_R(c_R(v)) + log p_G(c_G(v)) + log p_B(c_B(v)) ),

i.e. the factorised colour likelihood restricted to the V colours that exist on the template and renormalised.
Expected geodesic distances under q are then differentiable in the logits. To keep memory bounded (q is [N, V],
V = 13k) the losses run on a random subset of labelled pixels per image.
"""

from __future__ import annotations

import torch


def sample_pixels(
    valid: torch.Tensor, per_image: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to `per_image` distinct random pixels where `valid` is true, in every image.

    Args:
        valid: [B, H, W] bool.
        per_image: pixels per image (all valid pixels when there are fewer).
        generator: CPU generator, so the draw is a function of the training step (exact resume).
    Returns:
        (b, y, x): [N] int64 each, on valid's device, image by image.
    """
    flat = valid.flatten(1).cpu()  # (B, H W)
    width = valid.shape[-1]
    picks, images = [], []
    for image, row in enumerate(flat):
        idx = torch.nonzero(row).squeeze(1)  # (n,)
        idx = idx[torch.randperm(len(idx), generator=generator)[:per_image]]
        picks.append(idx)
        images.append(torch.full_like(idx, image))
    pix = torch.cat(picks).to(valid.device)
    b = torch.cat(images).to(valid.device)
    return b, pix // width, pix % width


def vertex_log_probs(logits: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-probability of each template vertex: sum_c log_softmax(logits_c)[c(v)].

    Args:
        logits: [N, 3, K] float colour logits at N pixels.
        colors: [V, 3] int64 template colour code (values < K).
    Returns:
        [N, V] float32; softmax over V gives the soft assignment q.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, 3, K)
    # index_select per channel: on CPU several times faster than advanced indexing, forward and backward (an
    # index_add), and no [N, V, 3] intermediate.
    out = logp[:, 0].index_select(1, colors[:, 0])  # (N, V)
    out = out + logp[:, 1].index_select(1, colors[:, 1])
    return out + logp[:, 2].index_select(1, colors[:, 2])


def geodesic_loss(vertex_probs: torch.Tensor, gt_rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Expected geodesic distance (metres) between the predicted and the GT vertex (Sec. 3.4).

    L = sum_i w_i sum_v q_i(v) g(v, y_i) / sum_i w_i. Zero when q_i is a point mass on y_i; unlike the
    classification loss it prefers a wrong vertex near y_i to one across the body.

    Args:
        vertex_probs: [N, V] float soft assignment q (rows sum to 1).
        gt_rows: [N, V] float32 g(y_i, .) geodesic distances from each pixel's GT vertex, metres.
        weight: [N] float pixel weights.
    Returns:
        scalar float32, metres.
    """
    expected = torch.linalg.vecdot(vertex_probs, gt_rows)  # (N,), without an [N, V] temporary
    return (weight * expected).sum() / weight.sum().clamp_min(1e-6)


def consistency_loss(
    vertex_probs: torch.Tensor,
    gt_rows: torch.Tensor,
    image: torch.Tensor,
    weight: torch.Tensor,
    ref_rows: torch.Tensor,
    ref_gt_vertex: torch.Tensor,
    ref_image: torch.Tensor,
    ref_weight: torch.Tensor,
) -> torch.Tensor:
    """Pairwise geodesic consistency against random reference pixels (Eq. 2; see `total_loss` for how it is fed).

    For pixel i and reference pixel r of the same image, the geodesic distance between their *predicted*
    surface points should equal that between their *GT* points:

        L = sum_{i, r} w_i w_r | E_{v ~ q_i}[ g(v, v_r) ] - g(y_i, y_r) | / sum_{i, r} w_i w_r,

    with v_r the reference's decoded predicted vertex (no gradient) and y the GT vertices. It constrains
    the relative layout of the predicted map, which the per-pixel losses do not see. Zero when every prediction
    is a point mass on the GT vertex.

    Args:
        vertex_probs: [N, V] soft assignment q_i of the sampled pixels.
        gt_rows: [N, V] g(y_i, .) metres.
        image: [N] int64 image index of each pixel, grouped image by image (as `sample_pixels` returns them).
        weight: [N] float.
        ref_rows: [R, V] g(v_r, .) from each reference's predicted vertex, metres.
        ref_gt_vertex: [R] int64 y_r; ref_image: [R] int64; ref_weight: [R] float.
    Returns:
        scalar float32, metres.
    """
    if len(image) > 1 and bool((image[1:] < image[:-1]).any()):
        raise ValueError("consistency_loss: pixels must be grouped by image (sorted image index)")
    # Pairs never cross images, so one [n_b, V] x [V, r_b] product per image (not [N, V] x [V, R]); `split` (not
    # slicing) keeps the backward to one concatenation instead of a zero-filled [N, V] gradient per image.
    ids, counts = torch.unique_consecutive(image, return_counts=True)
    sizes = counts.tolist()
    total = vertex_probs.new_zeros(())
    norm = vertex_probs.new_zeros(())
    pieces = zip(ids.tolist(), vertex_probs.split(sizes), gt_rows.split(sizes), weight.split(sizes), strict=True)
    for img, probs, rows, w in pieces:
        refs = ref_image == img
        if not bool(refs.any()):
            continue
        predicted = probs @ ref_rows[refs].T  # (n_b, r_b): E_q[g(v, v_r)]
        target = rows[:, ref_gt_vertex[refs]]  # (n_b, r_b): g(y_i, y_r)
        pair = w[:, None] * ref_weight[refs][None, :]  # (n_b, r_b)
        total = total + (pair * (predicted - target).abs()).sum()
        norm = norm + pair.sum()
    return total / norm.clamp_min(1e-6)
