"""`bodymap pseudo_gt`: dense pseudo ground truth on DensePose-COCO (real, or the coco-like split by default), its
quality where dense truth exists, and Slim DensePose's flow propagation of sparse labels in video.

Writes under --out:
  dense/<name>.npz   vertex [H,W] int32 (-1 off people), weight [H,W] float32 (confidence), mask [H,W] uint8
  sparse/<name>.npz  vertex only on annotated pixels, mask = the people's silhouettes, weight 1
  flow/<seq>/<frame>.npz  sparse labels of video frames: the labelled frames' own points and the ones propagated
                     to their neighbours; mask = CSE foreground
`<name>` is the image file's stem, like the CSE outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.spatial import cKDTree

from bodymap.cli_options import add_stage_inputs
from bodymap.config import Params, PseudoGtParams
from bodymap.data.coco import CocoGroundTruth, read_coco, video_frames
from bodymap.data.images import image_key
from bodymap.data.sets import ImageSet, pipeline_sets
from bodymap.densepose import PART_GROUPS
from bodymap.errors import BodymapError
from bodymap.eval.accuracy import PointAccumulator, visible_surface
from bodymap.eval.plots import save_sample, vertex_maps_sample
from bodymap.io import atomic_dir, read_cse, read_image, save_npz, write_json, write_run_info
from bodymap.log import progress
from bodymap.pseudo_gt.dense import dense_pseudo_gt, nearest_point_fill
from bodymap.pseudo_gt.flow import estimate_flow, propagate_points
from bodymap.template import BodyTemplate
from bodymap.tracking import Tracker

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_inputs(parser, "template", "render", "cse")
    parser.add_argument("--out", type=Path, required=True, help="pseudo-GT output directory")
    parser.add_argument("--metrics", type=Path, default=None, help="quality and propagation figures (JSON)")


def _person_points(coco: CocoGroundTruth, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Image positions [K, 2] (x, y, floats; dp * size / 255 + corner) and vertices [K] of annotation g."""
    s, e = coco.pt_start[g], coco.pt_start[g + 1]
    px, py = coco.point_positions
    xy = np.stack([px[s:e], py[s:e]], axis=1)
    keep = coco.vertex[s:e] >= 0
    return xy[keep], coco.vertex[s:e][keep]


def build_coco_pseudo_gt(
    coco_set: ImageSet, cse_dir: Path, template: BodyTemplate, p: PseudoGtParams, out: Path
) -> dict[str, float | None]:
    """Write dense/ and sparse/ GT for every annotated image; score against dense truth when it exists."""
    coco = read_coco(coco_set.annotations, template, images_dir=coco_set.root)
    tree = cKDTree(template.vertices)
    quality = None
    truth_dir = coco_set.dense_truth / "gt" if coco_set.dense_truth is not None else None
    if truth_dir is not None:
        quality = {
            name: PointAccumulator(
                template.geodesics,
                template.chart,
                windows_px=(5, 10, 20),
                cm=(5.0, 10.0, 20.0),
                min_spacing_m=template.mean_edge_length,
            )
            for name in ("pseudo_gt", "cse", "sparse")
        }
    people = 0
    for i in progress(range(coco.num_images), "pseudo-GT", logger=log):
        h, w = int(coco.heights[i]), int(coco.widths[i])
        name = image_key(coco.file_names[i])
        cse_vertex, cse_score = read_cse(cse_dir / f"{name}.npz")
        if cse_vertex.shape != (h, w):
            raise BodymapError(
                f"{cse_dir / name}.npz: field 'vertex': expected shape ({h}, {w}), got {cse_vertex.shape}"
            )
        dense = np.full((h, w), -1, np.int32)
        weight = np.zeros((h, w), np.float32)
        sparse = np.full((h, w), -1, np.int32)
        sparse_fill = np.full((h, w), -1, np.int32)
        mask = np.zeros((h, w), bool)
        unknown = np.zeros((h, w), bool)  # crowds, ignored people, ignore regions: neither person nor background
        if coco.ignore_regions and coco.ignore_regions[i] is not None:
            unknown |= mask_utils.decode(coco.ignore_regions[i]).astype(bool)
        for g in range(coco.gt_start[i], coco.gt_start[i + 1]):
            if coco.ignore[g] or coco.iscrowd[g]:
                unknown |= mask_utils.decode(coco.rles[g]).astype(bool)
                continue
            silhouette = mask_utils.decode(coco.rles[g]).astype(bool)
            if not silhouette.any():
                x, y, bw, bh = coco.boxes[g].astype(int)
                silhouette = np.zeros((h, w), bool)
                silhouette[y : y + bh, x : x + bw] = cse_score[y : y + bh, x : x + bw] > 0.5
            xy, vertex = _person_points(coco, g)
            result = dense_pseudo_gt(
                silhouette,
                xy,
                vertex,
                cse_vertex,
                cse_score,
                template.vertices,
                sigma_px=p.correction_sigma_px,
                max_correction_m=p.max_correction_m,
                vertex_tree=tree,
            )
            # Where people overlap, the more confident map wins.
            better = result.confidence > weight
            dense[better] = result.vertex[better]
            weight[better] = result.confidence[better]
            fill = nearest_point_fill(silhouette, xy, vertex)
            sparse_fill[silhouette & (sparse_fill < 0)] = fill[silhouette & (sparse_fill < 0)]
            px = np.clip(xy[:, 0].astype(int), 0, w - 1)
            py = np.clip(xy[:, 1].astype(int), 0, h - 1)
            sparse[py, px] = vertex
            mask |= silhouette
            people += 1
        mask_weight = (~unknown | mask).astype(np.float32)
        save_npz(
            out / "dense" / f"{name}.npz",
            vertex=dense,
            weight=weight,
            mask=mask.astype(np.uint8),
            mask_weight=mask_weight,
        )
        save_npz(
            out / "sparse" / f"{name}.npz",
            vertex=sparse,
            weight=np.ones((h, w), np.float32),
            mask=mask.astype(np.uint8),
            mask_weight=mask_weight,
        )
        cse_on_people = np.where(mask, cse_vertex, -1)
        truth = None
        if quality is not None:
            truth_path = truth_dir / f"{name}.npz"
            with np.load(truth_path) as data:
                truth, truth_person = data["vertex"].astype(np.int32), data["person"]
            scored = np.where(mask, truth, -1)  # the annotated people, as the pseudo-GT covers them
            visible = visible_surface(scored, truth_person, template.geodesics, template.mean_edge_length)
            for key, pred in (("pseudo_gt", dense), ("cse", cse_on_people), ("sparse", sparse_fill)):
                quality[key].add_dense(scored, truth_person, pred, visible)
        if i < p.pictures and (sparse >= 0).any():
            labelled_y, labelled_x = np.nonzero(sparse >= 0)
            maps = [("CSE", cse_on_people), ("nearest point", sparse_fill), ("pseudo-GT", dense)]
            maps += [("truth", np.where(mask, truth, -1))] if truth is not None else []
            points = (np.stack([labelled_x, labelled_y], axis=1) + 0.5, sparse[labelled_y, labelled_x])
            image = read_image(coco_set.root / coco.file_names[i])
            save_sample(out / "pictures" / f"{name}.png", vertex_maps_sample(image, points, maps, template.colors))
    figures: dict[str, float | None] = {"images": float(coco.num_images), "people": float(people)}
    if quality is not None:
        for key, acc in quality.items():
            for metric, value in acc.metrics().items():
                if not metric.endswith(tuple(f"_{group}" for group in PART_GROUPS)):  # not the per-part ones
                    figures[f"{key}/{metric}"] = value
    return figures


# ------------------------------------------------------------------------------------------------ flow propagation
def propagate_video(
    video: Path, cse_video: Path, template: BodyTemplate, p: PseudoGtParams, out: Path
) -> dict[str, float | None]:
    """Move every labelled frame's points to frames within ±window along estimated flow; score them on the truth."""
    ann_path = video / "annotations.json"
    coco = read_coco(ann_path, template)
    frame_of = video_frames(ann_path, json.loads(ann_path.read_text()))
    by_video: dict[Any, dict[int, int]] = {}
    for i, image_id in enumerate(coco.image_ids.tolist()):
        vid, frame, _ = frame_of[image_id]
        by_video.setdefault(vid, {})[frame] = i
    labels: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    errors, proposed, kept = [], 0, 0
    labelled = [i for i in range(coco.num_images) if frame_of[int(coco.image_ids[i])][2]]
    for i in progress(labelled, "flow propagation", logger=log):
        people = [_person_points(coco, g) for g in range(coco.gt_start[i], coco.gt_start[i + 1]) if not coco.ignore[g]]
        people = [pp for pp in people if len(pp[1])]
        if not people:
            continue
        labels.setdefault(i, []).extend(people)
        vid, frame, _ = frame_of[int(coco.image_ids[i])]
        frames = by_video[vid]
        source = read_image(video / coco.file_names[i])
        for offset in [o for k in range(1, p.flow.window + 1) for o in (k, -k)]:
            j = frames.get(frame + offset)
            if j is None or frame_of[int(coco.image_ids[j])][2]:  # labelled frames keep their own labels only
                continue
            target = read_image(video / coco.file_names[j])
            forward = estimate_flow(source, target, p.flow.method)
            backward = estimate_flow(target, source, p.flow.method)
            _, target_score = read_cse(cse_video / f"{image_key(coco.file_names[j])}.npz")
            truth_path = video / "gt" / f"{image_key(coco.file_names[j])}.npz"
            truth = np.load(truth_path)["vertex"] if truth_path.exists() else None
            for xy, vertex in people:
                moved, keep = propagate_points(
                    xy, forward, backward, p.flow.max_fb_error_px, target_score >= p.flow.min_foreground
                )
                proposed += len(xy)
                kept += int(keep.sum())
                labels.setdefault(j, []).append((moved[keep], vertex[keep]))
                if truth is not None and keep.any():
                    px = np.clip(moved[keep, 0].astype(int), 0, truth.shape[1] - 1)
                    py = np.clip(moved[keep, 1].astype(int), 0, truth.shape[0] - 1)
                    at = truth[py, px]
                    err = np.full(len(at), np.inf)
                    ok = at >= 0
                    err[ok] = template.geodesics.pair(at[ok], vertex[keep][ok])
                    errors.append(err)
    for j, groups in labels.items():
        name = image_key(coco.file_names[j])
        _, score = read_cse(cse_video / f"{name}.npz")
        vertex_map = np.full(score.shape, -1, np.int32)
        for xy, vertex in groups:
            px = np.clip(xy[:, 0].astype(int), 0, score.shape[1] - 1)
            py = np.clip(xy[:, 1].astype(int), 0, score.shape[0] - 1)
            vertex_map[py, px] = vertex
        save_npz(
            out / "flow" / f"{name}.npz",
            vertex=vertex_map,
            mask=(score > 0.5).astype(np.uint8),
            weight=np.ones(score.shape, np.float32),
        )
    err = np.concatenate(errors) if errors else np.zeros(0)
    return {
        "flow/labelled_frames": float(len(labelled)),
        "flow/frames_with_labels": float(len(labels)),
        "flow/points_proposed": float(proposed),
        "flow/points_added": float(kept),
        "flow/kept_percent": 100.0 * kept / proposed if proposed else None,
        "flow/cm_5": 100.0 * float((err <= 0.05).mean()) if len(err) else None,
        "flow/cm_10": 100.0 * float((err <= 0.10).mean()) if len(err) else None,
    }


def run_pseudo_gt(args: argparse.Namespace, params: Params) -> dict[str, float | None]:
    p = params.pseudo_gt
    template = BodyTemplate.load(args.template)
    sets = pipeline_sets(args.render, params.data.coco)
    data = params.data.model_dump(mode="json")  # which DensePose-COCO set the labels are made on
    tracker = Tracker()
    with (
        tracker.run(
            "pseudo_gt",
            params={**p.model_dump(mode="json"), "data": data},
            inputs=[args.template, args.render, args.cse],
        ),
        atomic_dir(args.out) as tmp,
    ):
        figures = build_coco_pseudo_gt(sets["coco_train"], args.cse / "coco_train", template, p, tmp)
        # Labels for training come from train identities only (video_train); the test video stays unseen.
        if p.flow.enabled and sets["video_train"].exists():
            figures.update(propagate_video(sets["video_train"].root, args.cse / "video_train", template, p, tmp))
        write_run_info(tmp, "pseudo_gt", p.model_dump(mode="json"), data=data)
        tracker.log_metrics({k: v for k, v in figures.items() if v is not None})
        if (tmp / "pictures").is_dir():
            tracker.log_artifact(tmp / "pictures")
    return figures


def main(args: argparse.Namespace, params: Params) -> int:
    figures = run_pseudo_gt(args, params)
    if args.metrics is not None:
        write_json(args.metrics, figures)
    log.info("pseudo_gt: %s", {k: round(v, 2) for k, v in figures.items() if v is not None})
    return 0
