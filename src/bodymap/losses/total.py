"""The BodyMap training objective: a weighted sum of the enabled terms (BodyMap Sec. 3.3-3.4, Table 6 ablation).

    L = w_cls L_cls + w_sil L_sil + w_geo L_geo + w_con L_con

A term with weight 0 is not computed. The batch (a dict of tensors, stacked per image):
    image  [B, 3, H, W] float  RGB in [0, 1] (the model's input; unused here)
    cse    [B, 4, H, W] float  CSE estimate (the model's input; unused here)
    vertex [B, H, W]   int64  GT template vertex, -1 on background / unlabelled
    chart  [B, H, W]   uint8 or int64  DensePose chart 0..24 (optional: without it no hand/head weighting)
    mask   [B, H, W]   float  GT foreground in [0, 1]
    weight [B, H, W]   float  per-pixel confidence of pseudo-GT (optional; 1 when absent)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial import cKDTree

from bodymap.losses.classification import chart_weight_table, pixel_classification_loss, pixel_weights
from bodymap.losses.geodesic import consistency_loss, geodesic_loss, sample_pixels, vertex_log_probs
from bodymap.losses.silhouette import soft_iou_loss
from bodymap.models.base import bin_values, colour_bins

if TYPE_CHECKING:
    from bodymap.config import LossParams
    from bodymap.models.base import BodyMapOutput
    from bodymap.template import BodyTemplate, Geodesics


class TemplateTensors:
    """What the losses need from the template, held on the training device: the colour code, the geodesic table and
    a colour decoder, so a GPU training step never goes back to the host for them (before: geodesic rows read from
    a memmap on the CPU and copied over, reference colours decoded by a k-d tree on the CPU).

    Args:
        colors: [V, 3] uint8 colour code (`BodyTemplate.colors`).
        vertices: [V, 3] rest-pose positions, metres (they give `values_per_metre`, for soft colour targets).
        geodesics: the template's geodesic lookup; its table moves to `device` (dense: [V, V] float16, 13k
            vertices = 356 MB; landmarks: [K, V] float16 and the nearest landmark of each vertex). On the CPU the
            dense table stays a view of the memory-mapped file, shared between processes.
        device: where the loss tensors live.
    """

    def __init__(
        self, colors: np.ndarray, vertices: np.ndarray, geodesics: Geodesics, device: torch.device | str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.colors = torch.as_tensor(np.asarray(colors), dtype=torch.int64, device=self.device)  # (V, 3)
        # Colour values per metre of rest-pose coordinate, per channel: the code scales each axis to 0..255
        # (`bodymap.template.charts.colour_code`), so the ratio of ranges is its slope. [3] float32, on the CPU.
        span = np.ptp(np.asarray(vertices, np.float64), axis=0).clip(1e-9)
        self.values_per_metre = torch.as_tensor(np.ptp(np.asarray(colors, np.float64), axis=0) / span).float()
        self.geodesics = geodesics
        self._colours_t = self.colors.T.float().contiguous()  # (3, V), for `nearest_colour`
        self._colour_sq = self.colors.pow(2).sum(1).float()  # (V,)
        self._colour_tree: cKDTree | None = None  # built on first use, on the CPU only
        self._dense = self._landmarks = self._nearest = None
        if geodesics is not None and geodesics.dense is not None:
            self._dense = _table_on(geodesics.dense, self.device)  # (V, V) float16
        elif geodesics is not None:
            self._landmarks = _table_on(geodesics.distances, self.device)  # (K, V) float16
            self._nearest = torch.as_tensor(np.asarray(geodesics.nearest, np.int64), device=self.device)  # (V,)

    @classmethod
    def from_template(cls, template: BodyTemplate, device: torch.device | str = "cpu") -> TemplateTensors:
        return cls(template.colors, template.vertices, template.geodesics, device)

    @property
    def num_vertices(self) -> int:
        return int(self.colors.shape[0])

    def decode_colors(self, rgb: torch.Tensor) -> torch.Tensor:
        """[N, 3] int colour values -> [N] int64 vertex with the nearest code colour, on `self.device`.

        On the CPU through a k-d tree built like `BodyTemplate.decode_colors`'s, so decoding here gives the vertices
        inference gives (ties included). On an accelerator by brute force there (`nearest_colour`), without a round
        trip to the host; an exact tie there may go to another vertex at the same colour distance.
        """
        if self.device.type != "cpu":
            return nearest_colour(rgb.to(self.device), self._colours_t, self._colour_sq)
        if self._colour_tree is None:
            self._colour_tree = cKDTree(self.colors.numpy().astype(np.float32))
        _, idx = self._colour_tree.query(rgb.detach().cpu().numpy().astype(np.float32), workers=-1)
        return torch.from_numpy(np.asarray(idx, np.int64))

    def geodesic_rows(self, vertex: torch.Tensor) -> torch.Tensor:
        """[N] int vertex ids -> [N, V] float32 geodesic distances (metres) from each, on `self.device`.

        The same values as `Geodesics.rows`, gathered on the device."""
        i = vertex.detach().to(self.device, torch.int64)
        if self._dense is None and self._landmarks is None:
            raise ValueError("geodesic_rows: these TemplateTensors were built without geodesics")
        if self._dense is not None:
            return self._dense.index_select(0, i).float()
        # Landmarks: the mean of the lookups through either endpoint's nearest landmark (`Geodesics.rows`).
        through_i = self._landmarks.index_select(0, self._nearest[i]).float()  # (N, V)
        through_v = self._landmarks.index_select(1, i).index_select(0, self._nearest).T.float()  # (N, V)
        rows = 0.5 * (through_i + through_v)
        rows[torch.arange(len(i), device=self.device), i] = 0.0
        return rows


def nearest_colour(
    rgb: torch.Tensor, colours_t: torch.Tensor, colour_sq: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """Brute-force nearest code colour on the queries' device, `chunk` queries x V at a time.

    Args:
        rgb: [N, 3] int colour values 0..255; colours_t: [3, V] float32 code colours, transposed; colour_sq: [V]
            float32 their squared norms.
    Returns:
        [N] int64 vertex ids; exact ties go to the lowest id. ||c||^2 - 2 c.q are integers below 2^24, so exact in
        float32 (and in TF32 matmuls: the inputs are at most 255), whatever the autocast state.
    """
    query = rgb.detach().float()
    out = torch.empty(len(query), dtype=torch.int64, device=query.device)
    with torch.autocast(device_type=query.device.type, enabled=False):
        for start in range(0, len(query), chunk):
            block = query[start : start + chunk]  # (n, 3)
            distance = torch.addmm(colour_sq, block, colours_t, alpha=-2.0)  # (n, V): squared distance - ||q||^2
            out[start : start + len(block)] = distance.argmin(dim=1)
    return out


def _table_on(array: np.ndarray, device: torch.device, rows: int = 1024) -> torch.Tensor:
    """A 2-D table as a tensor on `device`: on the CPU a view of `array` (a memmap stays one: no copy, pages shared
    between processes), elsewhere copied over in blocks of `rows` rows (no whole host copy of a memmap)."""
    if device.type == "cpu":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(array)  # read only: the losses index it, never write
    out = torch.empty(array.shape, dtype=torch.from_numpy(array[:1]).dtype, device=device)
    for start in range(0, array.shape[0], rows):
        out[start : start + rows] = torch.from_numpy(np.ascontiguousarray(array[start : start + rows])).to(device)
    return out


def total_loss(
    outputs: BodyMapOutput,
    batch: Mapping[str, torch.Tensor],
    weights: LossParams,
    template: TemplateTensors,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled loss terms, and each term's value for logging.

    Terms (each computed only when its weight is > 0):
        classification: `pixel_classification_loss` with chart and confidence pixel weights (Sec. 3.3).
        silhouette: `soft_iou_loss` against `mask` (Sec. 3.3).
        geodesic: `geodesic_loss` on `geodesic_pixels` random labelled pixels per image (Sec. 3.4).
        consistency: `consistency_loss` (Eq. 2) between those pixels and `consistency_references` other random
            labelled pixels per image, whose predicted vertex is decoded as at inference (`decode_vertices`).

    Args:
        outputs: the network's `BodyMapOutput` for the batch.
        batch: see the module docstring for keys, shapes and dtypes.
        weights: term weights and sampling sizes (a `losses` params section).
        template: colour code and geodesics (`TemplateTensors.from_template`).
        generator: CPU generator for the pixel draws (the training step's, for exact resume).
    Returns:
        (total, {"total": .., term: value (unweighted), ...}) with total a scalar float32 tensor.
    """
    # Losses run in float32 even inside the loop's autocast: fp16 geodesic products and log-probabilities over
    # 13k vertices lose the precision the small terms need.
    with torch.autocast(device_type=outputs.silhouette.device.type, enabled=False):
        terms = _terms(outputs, batch, weights, template, generator)
    total = sum(
        (getattr(weights, name) * value for name, value in terms.items()),
        start=outputs.silhouette.new_zeros((), dtype=torch.float32),
    )
    logged = {"total": float(total.detach())} | {name: float(value.detach()) for name, value in terms.items()}
    return total, logged


def _terms(
    outputs: BodyMapOutput,
    batch: Mapping[str, torch.Tensor],
    weights: LossParams,
    template: TemplateTensors,
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor]:
    """The enabled terms, unweighted (see `total_loss`)."""
    vertex = batch["vertex"].long()
    confidence = batch.get("weight")
    chart = batch.get("chart")
    device = outputs.silhouette.device
    terms: dict[str, torch.Tensor] = {}

    if weights.silhouette > 0:
        # The silhouette is supervised wherever it is known (`mask_weight`), background included; `weight` is the
        # confidence of the correspondence labels, zero off the people in pseudo-GT, so it must not gate this term.
        terms["silhouette"] = soft_iou_loss(outputs.silhouette, batch["mask"], batch.get("mask_weight"))
    if weights.classification == 0 and weights.geodesic == 0 and weights.consistency == 0:
        return terms

    # Colour terms read the logits of labelled pixels only, computed once there (`BodyMapOutput.logits_at`).
    confidence_map = pixel_weights(vertex, confidence=confidence)  # (B, H, W), 0 where unlabelled
    labelled = confidence_map > 0
    b, y, x = torch.nonzero(labelled, as_tuple=True)  # (L,) each, image by image
    logits = outputs.logits_at(b, y, x)  # (L, 3, K)
    num_bins = outputs.num_bins
    vertex_bins = colour_bins(template.colors, num_bins)  # (V, 3) each vertex's class per channel
    gt_vertex = vertex[b, y, x]  # (L,)
    pixel_confidence = confidence_map[b, y, x]  # (L,)

    if weights.classification > 0:
        table = chart_weight_table(weights.hand_weight, weights.head_weight, device)
        chart_weight = table[chart[b, y, x].long().clamp(0, 24)] if chart is not None else 1.0
        target = vertex_bins[gt_vertex]  # (L, 3)
        bins_per_metre = template.values_per_metre * (num_bins / 256.0)
        sigma = bins_per_metre * (weights.label_sigma_cm / 100.0) if weights.label_sigma_cm > 0 else None
        terms["classification"] = pixel_classification_loss(logits, target, pixel_confidence * chart_weight, sigma)

    if weights.geodesic > 0 or weights.consistency > 0:
        # Positions of the labelled pixels in the gathered list, so draws index `logits` directly.
        position = torch.full(labelled.shape, -1, dtype=torch.long, device=device)
        position[b, y, x] = torch.arange(len(b), device=device)
        pick = position[sample_pixels(labelled, weights.geodesic_pixels, generator)]  # (N,)
        # Geodesic terms weigh pixels by confidence only: the hand/head emphasis is the classifier's (Sec. 3.3).
        probs = vertex_log_probs(logits[pick], vertex_bins).softmax(dim=1)  # (N, V)
        gt_rows = template.geodesic_rows(gt_vertex[pick])  # (N, V)
        if weights.geodesic > 0:
            terms["geodesic"] = geodesic_loss(probs, gt_rows, pixel_confidence[pick])
        if weights.consistency > 0:
            ref = position[sample_pixels(labelled, weights.consistency_references, generator)]  # (R,)
            # A reference's prediction is decoded as at inference: arg max per channel, nearest code colour.
            ref_pred = template.decode_colors(bin_values(logits[ref].argmax(dim=2), num_bins))  # (R, 3) -> (R,)
            terms["consistency"] = consistency_loss(
                probs,
                gt_rows,
                b[pick],
                pixel_confidence[pick],
                template.geodesic_rows(ref_pred),
                gt_vertex[ref],
                b[ref],
                pixel_confidence[ref],
            )
    return terms
