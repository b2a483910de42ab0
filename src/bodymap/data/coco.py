"""DensePose-COCO (and DensePose-PoseTrack) annotations, read with pycocotools and checked record by record.

Every problem is one `BodymapError` naming the file, the annotation id and the field: `dp_*` lists of equal length,
`dp_I` in 1..24, `dp_U`/`dp_V` in [0, 1], `dp_x`/`dp_y` in [0, 255], `dp_vertex` within the template, RLEs
(`dp_masks`, `segmentation`) decodable, and, when an image folder is given, every image present.

The file is read into flat arrays so metrics and pseudo-GT can be vectorised over every point. Semantics follow
detectron2's `DensePoseCocoEval`: only the `person` category counts; a GT without `dp_x` is ignored; a point's vertex
is `dp_vertex` (on the mesh `ref_model` names, which must be the template) or `dp_I/U/V` through
`template.iuv_to_vertex`. Without `ref_model`, `dp_I/U/V` are DensePose's SMPL atlas coordinates (real DensePose-COCO
and PoseTrack), read only on a template built from SMPL + DensePose's UV data; with it they are on that template's
own charts. Points on any other mesh or atlas are refused, never mapped to a guessed vertex. κ comes from `dp_I`
(0.255 without it); the mask used for mask IoU is the union of `dp_masks` resized to the box, else `segmentation`,
else empty.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.ndimage import zoom

from bodymap.densepose import CHART_KAPPA, DEFAULT_KAPPA
from bodymap.errors import BodymapError, input_error
from bodymap.io import read_json
from bodymap.template import BodyTemplate

log = logging.getLogger(__name__)

# Exact decimal κ per chart (CHART_KAPPA is float32; detectron2 computes in float64). Index 0: no dp_I known.
KAPPA = np.round(CHART_KAPPA.astype(np.float64), 3)
KAPPA[0] = DEFAULT_KAPPA
DP_GRID = 256  # dp_masks are RLEs on a 256 x 256 grid over the box


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _numbers(path: Path, record: str, name: str, value: Any, length: int | None = None) -> np.ndarray:
    """A 1-D float64 array from a JSON list of numbers, or a BodymapError naming the field."""
    try:
        array = np.asarray(value, np.float64) if isinstance(value, list) else None
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1 or not np.isfinite(array).all():
        raise input_error(path, record, name, "expected a list of finite numbers")
    if length is not None and len(array) != length:
        raise input_error(path, record, name, f"expected {length} values (as many as dp_x), got {len(array)}")
    return array


def dp_masks_to_box_mask(dp_masks: list[Any], w: float, h: float) -> np.ndarray:
    """detectron2's GT mask for mask IoU: the union of the (up to) 14 `dp_masks` RLEs on the 256 x 256 box grid,
    bilinearly zoomed to the box (scipy `zoom`, order 1, no prefilter) and thresholded at 0.5.

    Returns [round(256 * max(h,1) / 256), round(256 * max(w,1) / 256)] uint8.
    """
    grid = np.zeros((DP_GRID, DP_GRID))
    entries = [entry for entry in dp_masks[:14] if entry]
    if entries:
        with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning, once per call
            warnings.simplefilter("ignore", DeprecationWarning)
            # the union of the parts (detectron2 builds the part label map, then keeps label > 0)
            grid[mask_utils.decode([mask_utils.merge(entries)])[:, :, 0] > 0] = 1.0
    scale = (float(max(h, 1)) / DP_GRID, float(max(w, 1)) / DP_GRID)
    return (zoom(grid, scale, order=1, prefilter=False) > 0.5).astype(np.uint8)


def box_mask_on_image(
    mask: np.ndarray | None, box: np.ndarray, height: int, width: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Place a box-grid mask on the image as detectron2 does: top-left at (int(x), int(y)), clipped to the image and
    to int(x + w), int(y + h). Returns [H, W] uint8 (all zero for mask None), written into `out` when given (a
    zeroed [H, W] view, e.g. one channel of a Fortran-ordered stack for pycocotools)."""
    image = np.zeros((height, width), np.uint8) if out is None else out
    if mask is not None:
        x, y, w, h = (float(v) for v in box)
        x0, y0 = max(int(x), 0), max(int(y), 0)
        x1 = min(int(x + w), width, int(x) + mask.shape[1])
        y1 = min(int(y + h), height, int(y) + mask.shape[0])
        if x1 > x0 and y1 > y0:
            image[y0:y1, x0:x1] = mask[y0 - int(y) : y1 - int(y), x0 - int(x) : x1 - int(x)]
    return image


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of one [H, W] binary mask."""
    return mask_utils.encode(np.asfortranarray(mask[:, :, None] > 0, dtype=np.uint8))[0]


def gt_mask_rle(ann: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """The image-level RLE a GT contributes to mask IoU (dp_masks, else segmentation, else an empty mask)."""
    box = np.asarray(ann["bbox"], np.float64)
    if "dp_masks" in ann:
        return encode(box_mask_on_image(dp_masks_to_box_mask(ann["dp_masks"], box[2], box[3]), box, height, width))
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list) and segmentation:
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict):
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    return encode(box_mask_on_image(None, box, height, width))


@dataclass
class CocoGroundTruth:
    """DensePose-COCO `person` ground truth, flattened.

    Images, sorted by id: image_ids [I] int64, heights/widths [I] int64, file_names [I] str.
    Annotations, image by image in file order: gt_start [I + 1] (image i owns gt_start[i]:gt_start[i+1]);
    ann_ids [G] int64, boxes [G, 4] float64 (x, y, w, h), areas [G] float64, iscrowd [G] bool,
    ignore [G] bool (no dp_x), rles: G image-level RLEs for mask IoU.
    ignore_regions: per image, the RLE of DensePose-PoseTrack's `ignore_regions_x/y` polygons (people nobody
    annotated: neither person nor background), or None.
    Points: pt_start [G + 1]; dp_x, dp_y [P] float64 on the 0..255 box grid; vertex [P] int32 (-1: chart missing on
    the template); kappa [P] float64; chart [P] uint8 (dp_I, else the template chart of the vertex).
    """

    path: Path
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: list[str]
    gt_start: np.ndarray
    ann_ids: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    iscrowd: np.ndarray
    ignore: np.ndarray
    rles: list[dict[str, Any]]
    pt_start: np.ndarray
    dp_x: np.ndarray
    dp_y: np.ndarray
    vertex: np.ndarray
    kappa: np.ndarray
    chart: np.ndarray
    index_of: dict[int, int] = field(default_factory=dict)
    ignore_regions: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_points(self) -> int:
        return len(self.vertex)

    @cached_property
    def point_gt(self) -> np.ndarray:
        """[P] int64 annotation index of each point."""
        return np.repeat(np.arange(len(self.ann_ids)), np.diff(self.pt_start))

    @cached_property
    def point_image(self) -> np.ndarray:
        """[P] int64 image index of each point."""
        gt_image = np.repeat(np.arange(self.num_images), np.diff(self.gt_start))
        return gt_image[self.point_gt]

    @cached_property
    def point_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(x [P], y [P]) float64 image position of each point: dp * size / 255 + box corner, in detectron2's order of
        operations (the one place the box-relative grid becomes image coordinates)."""
        box = self.boxes[self.point_gt]
        return self.dp_x * box[:, 2] / 255.0 + box[:, 0], self.dp_y * box[:, 3] / 255.0 + box[:, 1]

    @cached_property
    def point_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(x [P], y [P]) int64: the image pixel holding each point (`point_positions`, floored, clipped)."""
        px, py = self.point_positions
        x, y = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
        image = self.point_image
        return np.clip(x, 0, self.widths[image] - 1), np.clip(y, 0, self.heights[image] - 1)


def _in_range(path: Path, record: str, name: str, values: np.ndarray, lo: float, hi: float) -> None:
    if len(values) and (values.min() < lo or values.max() > hi):
        bad = values[(values < lo) | (values > hi)][0]
        raise input_error(path, record, name, f"expected values in [{lo:g}, {hi:g}], got {bad:g}")


def _check_masks(path: Path, record: str, ann: dict[str, Any], height: int, width: int) -> None:
    """dp_masks: up to 14 RLEs on the 256 x 256 box grid (or empty); segmentation: polygons or an RLE. Decodable."""
    with warnings.catch_warnings():  # pycocotools' numpy-2 DeprecationWarning on every decode
        warnings.simplefilter("ignore", DeprecationWarning)
        _check_mask_fields(path, record, ann, height, width)


def _check_mask_fields(path: Path, record: str, ann: dict[str, Any], height: int, width: int) -> None:
    if "dp_masks" in ann:
        masks = ann["dp_masks"]
        if not isinstance(masks, list) or len(masks) > 14:
            raise input_error(path, record, "dp_masks", "expected a list of up to 14 RLEs (empty entries allowed)")
        for k, entry in enumerate(masks):
            if not entry:
                continue
            try:
                decoded = mask_utils.decode(entry)
            except Exception as exc:  # pycocotools raises TypeError/ValueError/KeyError for broken RLEs
                raise input_error(path, record, f"dp_masks[{k}]", f"not a decodable RLE ({exc})") from None
            if decoded.shape != (DP_GRID, DP_GRID):
                raise input_error(path, record, f"dp_masks[{k}]", f"expected a {DP_GRID}x{DP_GRID} RLE")
    segmentation = ann.get("segmentation")
    if segmentation:
        try:
            if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                mask_utils.frPyObjects(segmentation, height, width)
            elif isinstance(segmentation, dict):
                mask_utils.decode(segmentation)
            else:
                mask_utils.frPyObjects(segmentation, height, width)
        except Exception as exc:
            raise input_error(path, record, "segmentation", f"not decodable polygons or RLE ({exc})") from None


def _check_atlas(
    path: Path, record: str, ann: dict[str, Any], template: BodyTemplate, use_vertex: bool, has_iuv: bool
) -> None:
    """Refuse points whose surface coordinates are not on this template, rather than guess a vertex for them.

    `ref_model` names the mesh the points are written on: `dp_vertex` indexes its vertices, `dp_I/U/V` are on its
    atlas. No `ref_model` is DensePose-COCO's own convention: the points are on DensePose's SMPL atlas, which only a
    template built from SMPL + DensePose's UV data has (on any other, the nearest (U, V) in chart I is an arbitrary
    vertex of the right part).
    """
    ref = ann.get("ref_model")
    if use_vertex:
        if ref is None:
            raise input_error(
                path, record, "ref_model",
                f"missing: dp_vertex needs ref_model naming the mesh it indexes (this template is {template.name!r})",
            )  # fmt: skip
        if ref != template.name:
            raise input_error(
                path, record, "ref_model",
                f"dp_vertex indexes the vertices of {ref!r}, but the template is {template.name!r}; build the template "
                f"from that mesh (template.source: densepose or mesh, with name {ref!r}), or give dp_I/dp_U/dp_V "
                "without dp_vertex",
            )  # fmt: skip
    elif has_iuv and ref is None and not template.has_densepose_atlas:
        raise input_error(
            path, record, "dp_I/dp_U/dp_V",
            f"no ref_model, so these are DensePose's SMPL atlas coordinates, but the template {template.name!r} "
            f"(source {template.meta.get('source', 'unknown')!r}) has its own charts, not DensePose's atlas; build the "
            "template from SMPL and DensePose's UV data (template.source: densepose, template.densepose.model: the "
            "SMPL model file, template.densepose.uv_data: UV_Processed.mat)",
        )  # fmt: skip
    elif has_iuv and ref is not None and ref != template.name:
        raise input_error(
            path, record, "ref_model",
            f"dp_I/dp_U/dp_V are on the atlas of {ref!r}, but the template is {template.name!r}; build the template "
            f"from that mesh and its charts (name {ref!r}), or from SMPL + DensePose's UV data for DensePose-COCO",
        )  # fmt: skip


def _ignore_regions(path: Path, record: str, image: dict[str, Any]) -> dict[str, Any] | None:
    """DensePose-PoseTrack's `ignore_regions_x` / `ignore_regions_y` (one list of x and one of y per polygon) as one
    image-level RLE, or None when the image has none."""
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None and ys is None:
        return None
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise input_error(path, record, "ignore_regions_x", "expected ignore_regions_x and _y: equal-length lists")
    polygons = []
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        px = _numbers(path, record, f"ignore_regions_x[{k}]", x)
        py = _numbers(path, record, f"ignore_regions_y[{k}]", y, len(px))
        if len(px) >= 3:  # a polygon; shorter entries (PoseTrack has a few empty ones) cover nothing
            polygons.append(np.stack([px, py], axis=1).ravel().tolist())
    if not polygons:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(polygons, image["height"], image["width"]))


def video_frames(path: str | Path, data: dict[str, Any]) -> dict[int, tuple[Any, int, bool]]:
    """(vid_id, frame_id, labelled) of every image of a DensePose-PoseTrack document, by image id.

    One rule for every reader: `vid_id` and `frame_id` are required; `labelled` is `is_labeled` where the file has
    it, else whether the image has an annotation with DensePose points (`dp_x`).
    """
    with_points = {a.get("image_id") for a in data.get("annotations", []) if isinstance(a, dict) and "dp_x" in a}
    frames = {}
    for index, image in enumerate(data["images"]):
        for name in ("vid_id", "frame_id"):
            if name not in image:
                raise input_error(path, f"images[{index}]", name, "missing: a video set needs vid_id and frame_id")
        if not isinstance(image["frame_id"], int) or isinstance(image["frame_id"], bool):
            raise input_error(path, f"images[{index}]", "frame_id", f"expected an int, got {image['frame_id']!r}")
        labelled = image.get("is_labeled", image["id"] in with_points)
        frames[image["id"]] = (image["vid_id"], image["frame_id"], bool(labelled))
    return frames


def read_coco(path: str | Path, template: BodyTemplate, images_dir: str | Path | None = None) -> CocoGroundTruth:
    """Read and check a DensePose-COCO JSON; every problem is a BodymapError naming file, record and field.

    Args:
        images_dir: when given, every image's `file_name` must exist under it.
    """
    path = Path(path)
    data = read_json(path, "the annotations")
    if not isinstance(data, dict):
        raise input_error(path, None, None, "expected a COCO JSON object with images and annotations")
    for name in ("images", "annotations"):
        if not isinstance(data.get(name), list):
            raise input_error(path, None, name, "missing, or not a list")
    person = next((c.get("id") for c in data.get("categories") or [] if c.get("name") == "person"), 1)

    images: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(data["images"]):
        record = f"images[{index}]"
        if not isinstance(image, dict):
            raise input_error(path, record, None, "expected an object")
        for name in ("id", "height", "width"):
            value = image.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or (name != "id" and value <= 0):
                raise input_error(path, record, name, "missing" if value is None else f"expected an int, got {value!r}")
        if images_dir is not None and not (Path(images_dir) / str(image.get("file_name", ""))).is_file():
            raise input_error(path, record, "file_name", f"image {image.get('file_name')!r} not found in {images_dir}")
        images[image["id"]] = image
    order = sorted(images)
    index_of = {image_id: i for i, image_id in enumerate(order)}

    per_image: list[list[dict[str, Any]]] = [[] for _ in order]
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise input_error(path, f"annotations[{index}]", None, "expected an object")
        record = f"annotation id {ann['id']}" if "id" in ann else f"annotations[{index}]"
        for name in ("id", "image_id", "category_id", "bbox", "area"):
            if name not in ann:
                raise input_error(path, record, name, "missing")
        if ann["image_id"] not in index_of:
            raise input_error(path, record, "image_id", f"unknown image id {ann['image_id']!r} (not in images)")
        if ann["category_id"] != person:
            continue
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)) or min(bbox[2:]) < 0:
            raise input_error(path, record, "bbox", f"expected [x, y, w, h] with w, h >= 0, got {bbox!r}")
        if not _number(ann["area"]):
            raise input_error(path, record, "area", f"expected a number, got {ann['area']!r}")
        image = images[ann["image_id"]]
        _check_masks(path, record, ann, image["height"], image["width"])
        per_image[index_of[ann["image_id"]]].append(ann)

    anns = [ann for group in per_image for ann in group]
    gt_start = np.concatenate([[0], np.cumsum([len(g) for g in per_image])]).astype(np.int64)
    heights = np.array([images[i]["height"] for i in order], np.int64)
    widths = np.array([images[i]["width"] for i in order], np.int64)
    gt_image = np.repeat(np.arange(len(order)), np.diff(gt_start))

    dp_x, dp_y, vertex, charts, counts = [], [], [], [], []
    iuv_rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for g, ann in enumerate(anns):
        record = f"annotation id {ann['id']}"
        if "dp_x" not in ann:
            counts.append(0)
            continue
        x = _numbers(path, record, "dp_x", ann["dp_x"])
        n = len(x)
        y = _numbers(path, record, "dp_y", ann.get("dp_y"), n) if "dp_y" in ann else None
        if y is None:
            raise input_error(path, record, "dp_y", "missing (dp_x is present)")
        _in_range(path, record, "dp_x", x, 0.0, 255.0)
        _in_range(path, record, "dp_y", y, 0.0, 255.0)
        for name in ("dp_U", "dp_V"):
            if name in ann:
                _in_range(path, record, name, _numbers(path, record, name, ann[name], n), 0.0, 1.0)
        chart = np.zeros(n, np.uint8)
        has_iuv = all(k in ann for k in ("dp_I", "dp_U", "dp_V"))
        if "dp_I" in ann:
            i_values = _numbers(path, record, "dp_I", ann["dp_I"], n)
            if n and (np.any(i_values != np.round(i_values)) or i_values.min() < 1 or i_values.max() > 24):
                raise input_error(path, record, "dp_I", "expected chart ids 1..24")
            chart = i_values.astype(np.uint8)
        use_vertex = "dp_vertex" in ann
        _check_atlas(path, record, ann, template, use_vertex, has_iuv)
        if use_vertex:
            v = _numbers(path, record, "dp_vertex", ann["dp_vertex"], n)
            if n and (np.any(v != np.round(v)) or v.min() < 0 or v.max() >= template.num_vertices):
                raise input_error(path, record, "dp_vertex", f"expected vertex ids in [0, {template.num_vertices})")
            vertex.append(v.astype(np.int32))
        elif has_iuv:
            u = _numbers(path, record, "dp_U", ann["dp_U"], n)
            w = _numbers(path, record, "dp_V", ann["dp_V"], n)
            iuv_rows.append((g, chart.copy(), u, w))
            vertex.append(np.full(n, -1, np.int32))
        else:
            raise input_error(path, record, "dp_vertex", "missing: a GT with dp_x needs dp_vertex or dp_I, dp_U, dp_V")
        dp_x.append(x)
        dp_y.append(y)
        charts.append(chart)
        counts.append(n)

    pt_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    vertex_all, chart_all = cat(vertex, np.int32), cat(charts, np.uint8)
    if iuv_rows:
        # One nearest-UV search per chart for the whole file instead of one per annotation.
        starts = [pt_start[g] for g, *_ in iuv_rows]
        sizes = [len(c) for _, c, _, _ in iuv_rows]
        found = template.iuv_to_vertex(
            np.concatenate([c for _, c, _, _ in iuv_rows]),
            np.concatenate([u for _, _, u, _ in iuv_rows]),
            np.concatenate([v for _, _, _, v in iuv_rows]),
        )
        index = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)])
        vertex_all[index] = found
        if np.any(found < 0):
            log.warning("%s: %d points on charts the template lacks; they score 0", path, int((found < 0).sum()))
    kappa = KAPPA[chart_all]
    known = vertex_all >= 0
    chart_all = np.where(chart_all > 0, chart_all, np.where(known, template.chart[np.maximum(vertex_all, 0)], 0))

    rles = [gt_mask_rle(ann, int(heights[gt_image[g]]), int(widths[gt_image[g]])) for g, ann in enumerate(anns)]
    return CocoGroundTruth(
        path=path,
        image_ids=np.array(order, np.int64),
        heights=heights,
        widths=widths,
        file_names=[str(images[i].get("file_name", "")) for i in order],
        gt_start=gt_start,
        ann_ids=np.array([a["id"] for a in anns], np.int64),
        boxes=np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
        areas=np.array([a["area"] for a in anns], np.float64),
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        ignore=np.array(["dp_x" not in a for a in anns], bool),
        rles=rles,
        pt_start=pt_start,
        dp_x=cat(dp_x, np.float64),
        dp_y=cat(dp_y, np.float64),
        vertex=vertex_all,
        kappa=kappa,
        chart=chart_all.astype(np.uint8),
        index_of=index_of,
        ignore_regions=[_ignore_regions(path, f"image id {i}", images[i]) for i in order],
    )
