"""Pseudo-GT keeps every label and fixes CSE; flow propagation follows motion and drops inconsistent points;
the equivariance loss vanishes for equivariant features."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from bodymap.losses.equivariance import (
    equivariance_loss,
    random_tps_warp,
    synthetic_warp_loss,
    tps_grid,
    warp_features,
)
from bodymap.pseudo_gt.dense import dense_pseudo_gt, nearest_point_fill
from bodymap.pseudo_gt.flow import estimate_flow, propagate_points


def _person(template, h: int = 40, w: int = 30, seed: int = 0):
    """A silhouette whose true vertex field is a smooth function of the pixel (rows span the body height)."""
    rng = np.random.default_rng(seed)
    sil = np.zeros((h, w), bool)
    sil[4:36, 6:24] = True
    # Truth: the template vertex nearest to a point that moves smoothly over the torso front with the pixel.
    ys, xs = np.mgrid[0:h, 0:w]
    target = np.stack([(xs - 15) * 0.01, 0.45 - ys * 0.012, np.full_like(xs, 0.12, dtype=float)], axis=-1)
    tree = cKDTree(template.vertices)
    truth = tree.query(target.reshape(-1, 3))[1].reshape(h, w).astype(np.int32)
    truth[~sil] = -1
    pts_y, pts_x = np.nonzero(sil)
    pick = rng.choice(len(pts_y), 25, replace=False)
    points = np.stack([pts_x[pick] + 0.5, pts_y[pick] + 0.5], axis=1)
    return sil, truth, points, truth[pts_y[pick], pts_x[pick]], tree


def _err(template, a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    both = mask & (a >= 0) & (b >= 0)
    return float(template.geodesics.pair(a[both], b[both]).mean())


def test_pseudo_gt_keeps_every_annotated_vertex(template):
    sil, _, points, labels, tree = _person(template)
    rng = np.random.default_rng(1)
    cse = np.where(sil, rng.integers(template.num_vertices, size=sil.shape), -1).astype(np.int32)
    out = dense_pseudo_gt(sil, points, labels, cse, np.ones(sil.shape), template.vertices, vertex_tree=tree)
    px, py = points[:, 0].astype(int), points[:, 1].astype(int)
    assert np.array_equal(out.vertex[py, px], labels)
    assert np.all(out.confidence[py, px] == 1.0)
    assert np.all(out.vertex[sil] >= 0) and np.all(out.vertex[~sil] == -1)
    assert out.confidence.max() <= 1.0 and out.confidence[sil].min() > 0


def test_pseudo_gt_corrects_a_shifted_cse_field_and_fills_its_holes(template):
    sil, truth, points, labels, tree = _person(template)
    h, w = sil.shape
    # CSE is the truth displaced by 4 cm sideways on the body, with a hole it calls background.
    ys, xs = np.mgrid[0:h, 0:w]
    shifted = np.stack([(xs - 15) * 0.01 + 0.04, 0.45 - ys * 0.012, np.full_like(xs, 0.12, dtype=float)], axis=-1)
    cse = tree.query(shifted.reshape(-1, 3))[1].reshape(h, w).astype(np.int32)
    cse[~sil] = -1
    cse[20:26, 10:16] = -1
    out = dense_pseudo_gt(sil, points, labels, cse, np.ones(sil.shape), template.vertices, sigma_px=6.0)
    assert np.all(out.vertex[20:26, 10:16] >= 0)
    assert _err(template, out.vertex, truth, sil) < 0.6 * _err(template, cse, truth, sil)


def test_sparse_points_alone_fill_the_silhouette(template):
    sil, _, points, labels, _ = _person(template)
    fill = nearest_point_fill(sil, points, labels)
    assert np.all(fill[sil] >= 0) and np.all(fill[~sil] == -1)
    assert np.array_equal(fill[points[:, 1].astype(int), points[:, 0].astype(int)], labels)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(h // 4, w // 4, 3)).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (3, 3), 0)


def test_flow_propagation_follows_a_translation():
    first = _texture(96, 128)
    dx, dy = 3, 2
    second = np.zeros_like(first)
    second[dy:, dx:] = first[:-dy, :-dx]
    forward, backward = estimate_flow(first, second), estimate_flow(second, first)
    points = np.array([[40.5, 30.5], [60.5, 50.5], [90.5, 70.5]])
    moved, keep = propagate_points(points, forward, backward)
    assert keep.all()
    assert np.allclose(moved - points, [dx, dy], atol=0.6)


def test_flow_propagation_drops_points_failing_the_forward_backward_check():
    h, w = 40, 50
    forward = np.zeros((h, w, 2), np.float32)
    forward[..., 0] = 4.0
    backward = np.zeros((h, w, 2), np.float32)
    backward[..., 0] = -4.0
    backward[:, 30:, 0] = 6.0  # inconsistent region (e.g. an occlusion) in frame t'
    points = np.array([[10.5, 10.5], [28.5, 20.5], [48.5, 5.5]])
    moved, keep = propagate_points(points, forward, backward, max_fb_error_px=5.0)
    assert keep.tolist() == [True, False, False]  # 2nd lands in the bad region, 3rd leaves the image
    assert np.allclose(moved[0], [14.5, 10.5])
    mask = np.zeros((h, w), bool)
    _, keep_masked = propagate_points(points, forward, backward, target_mask=mask)
    assert not keep_masked.any()


def test_equivariance_loss_is_zero_for_equivariant_features():
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 24, 32)
    shift = 3
    feats_b = torch.roll(feats, shifts=shift, dims=3)  # view B = A moved right by 3 px
    flow = torch.zeros(2, 24, 32, 2)
    flow[..., 0] = shift
    valid = torch.zeros(2, 24, 32)
    valid[:, :, : 32 - shift] = 1
    assert equivariance_loss(feats, feats_b, flow, valid) < 1e-5
    assert equivariance_loss(feats, torch.randn_like(feats), flow, valid) > 0.5


CONTROL = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 4), torch.linspace(-1, 1, 4), indexing="xy"), -1)
CONTROL = CONTROL.reshape(-1, 2)  # 4 x 4 (x, y) control points: on pixels 0, 10, 20, 30 of a 31 x 31 grid


def _pixel_grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([xs, ys], -1)


def test_tps_interpolates_its_control_points_and_is_the_identity_without_displacement():
    g = torch.Generator().manual_seed(0)
    target = CONTROL + 0.1 * torch.randn(2, 16, 2, generator=g)
    grid = tps_grid(CONTROL, target, 31, 31)  # (2, 31, 31, 2)
    at_control = grid[:, 10 * torch.arange(4)][:, :, 10 * torch.arange(4)].reshape(2, 16, 2)  # rows y, columns x
    assert torch.allclose(at_control, target, atol=1e-5)
    assert torch.allclose(tps_grid(CONTROL, CONTROL[None], 31, 31)[0], _pixel_grid(31, 31), atol=1e-6)


def test_tps_is_smooth_and_not_a_similarity_or_affine_map():
    g = torch.Generator().manual_seed(1)
    target = CONTROL + 0.1 * torch.randn(1, 16, 2, generator=g)
    grid = tps_grid(CONTROL, target, 61, 61)[0].double()
    # Smooth: on a grid twice as fine, first differences halve (no jumps) and second differences fall by about 4
    # (bounded curvature; a kinked, piecewise-linear field's would only halve).
    steps = []
    for n in (61, 121):
        d = tps_grid(CONTROL, target, n, n)[0].double() - _pixel_grid(n, n).double()
        steps.append([(d[1:] - d[:-1]).abs().max(), (d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2]).abs().max()])
    assert steps[1][0] < 0.55 * steps[0][0] and steps[1][1] < 0.35 * steps[0][1]
    # Bent: the best affine fit of the map leaves a clear residual (a similarity or affine warp leaves none).
    q = _pixel_grid(61, 61).reshape(-1, 2).double()
    design = torch.cat([torch.ones(len(q), 1, dtype=q.dtype), q], 1)
    fit = torch.linalg.lstsq(design, grid.reshape(-1, 2)).solution
    assert (design @ fit - grid.reshape(-1, 2)).abs().max() > 0.02


def test_tps_warp_flow_reads_the_warped_view_and_its_mask_keeps_in_frame_pixels_only():
    g = torch.Generator().manual_seed(3)
    grid, flow, valid = random_tps_warp(2, 40, 48, g, max_displacement=0.15)
    inside = (grid[..., 0].abs() <= 1) & (grid[..., 1].abs() <= 1)
    assert torch.equal(valid, inside) and 0 < valid.float().mean() < 1  # some pixels left the frame
    feats = F.avg_pool2d(torch.randn(2, 4, 40, 48, generator=g), 5, stride=1, padding=2)
    warped_view = F.grid_sample(feats, grid, align_corners=True)
    assert torch.allclose(warp_features(feats, flow), warped_view, atol=1e-4)  # flow: warped view -> image
    assert equivariance_loss(warped_view, feats, flow, valid) < 1e-4
    ones = F.grid_sample(torch.ones(2, 1, 40, 48), grid, align_corners=True)[:, 0]
    assert (ones[valid] > 0.999).all()  # every valid pixel shows a pixel of the image
    _, no_flow, all_valid = random_tps_warp(1, 40, 48, g, max_displacement=0.0)
    assert no_flow.abs().max() < 1e-4 and all_valid.all()


def test_synthetic_warp_loss_vanishes_for_a_pointwise_network_and_not_for_a_blind_one():
    g = torch.Generator().manual_seed(4)
    image, cse = torch.rand(2, 3, 32, 40, generator=g), torch.rand(2, 4, 32, 40, generator=g)
    net = torch.nn.Conv2d(7, 6, 1)  # per-pixel: commutes with any warp
    features_of = lambda im, c: net(torch.cat([im, c], 1))  # noqa: E731
    with torch.no_grad():
        assert synthetic_warp_loss(features_of, image, cse, features_of(image, cse), g) < 1e-4
        blind = lambda im, c: features_of(image, cse)  # noqa: E731 - ignores the warp
        assert synthetic_warp_loss(blind, image, cse, features_of(image, cse), g) > 1e-3


def test_frame_pairs_carry_estimated_flow_and_validity(template, rendered, tmp_path):
    from bodymap.data.pairs import FramePairs

    video = rendered / "video_train" if (rendered / "video_train").exists() else rendered / "video"
    # CSE inputs: use the dense GT as a stand-in CSE output so the pair loader has something to read.
    cse_dir = tmp_path / "cse"
    for gt in (video / "gt").rglob("*.npz"):
        out = cse_dir / gt.relative_to(video / "gt")
        out.parent.mkdir(parents=True, exist_ok=True)
        with np.load(gt) as data:
            np.savez(out, vertex=data["vertex"], score=(data["vertex"] >= 0).astype(np.float16))
    pairs = FramePairs(video, cse_dir, template.colors, window=2)
    assert len(pairs) > 0
    item = pairs.sample(0)
    h, w = item["pair_image_a"].shape[1:]
    assert item["pair_flow"].shape == (h, w, 2) and item["pair_cse_a"].shape == (4, h, w)
    assert 0.3 < float(item["pair_valid"].mean()) <= 1.0
