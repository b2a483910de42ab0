"""From network outputs to template vertices, and into the evaluator's dense prediction format (docs/formats.md).

Decoding (BodyMap Sec. 3.1): each pixel's most likely value per colour channel gives an RGB colour; the template
vertex with the nearest code colour (`BodyTemplate.decode_colors`, a k-d tree over the V code colours) is its
correspondence; pixels whose silhouette probability is not above the threshold are background (-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from bodymap.models.base import BodyMapOutput
from bodymap.template.mesh import BodyTemplate

if TYPE_CHECKING:
    from bodymap.eval.predictions import PredictionWriter


@torch.no_grad()
def decode_vertices(
    outputs: BodyMapOutput, template: BodyTemplate, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel template vertex and foreground probability.

    Args:
        outputs: color_logits [B, 3, K, H, W], silhouette [B, 1, H, W] logits.
        template: the template whose colour code the network predicts.
        threshold: foreground when sigmoid(silhouette) > threshold.
    Returns:
        vertex [B, H, W] int32 (-1 background) and score [B, H, W] float32 foreground probability.
    """
    prob = torch.sigmoid(outputs.silhouette[:, 0].float())  # (B, H, W)
    foreground = prob > threshold
    vertex = np.full(tuple(prob.shape), -1, np.int32)
    if bool(foreground.any()):
        b, y, x = torch.nonzero(foreground, as_tuple=True)
        rgb = outputs.colours_at(b, y, x)  # (N, 3) colour values, foreground pixels only
        vertex[foreground.cpu().numpy()] = template.decode_colors(rgb.cpu().numpy())
    return vertex, prob.cpu().numpy()


def add_decoded(
    writer: PredictionWriter,
    image_ids: Sequence[int],
    outputs: BodyMapOutput,
    template: BodyTemplate,
    threshold: float = 0.5,
    names: Sequence[str] | None = None,
) -> None:
    """Decode a batch and add each image to a dense prediction set (`bodymap.eval.predictions.PredictionWriter`).

    Each image becomes one npz with `vertex [H, W] int32` (-1 background) and `score [H, W] float16`; the writer's
    `close()` writes `predictions.json`.

    Args:
        writer: a writer of kind "dense".
        image_ids: [B] COCO image ids, in batch order.
        outputs: the network outputs for the batch.
        names: optional per-image file names without `.npz` (default: the zero-padded image id).
    """
    if len(image_ids) != outputs.silhouette.shape[0]:
        raise ValueError(f"{len(image_ids)} image ids for a batch of {outputs.silhouette.shape[0]}")
    vertex, score = decode_vertices(outputs, template, threshold)
    for i, image_id in enumerate(image_ids):
        writer.add_dense(int(image_id), vertex[i], score=score[i], name=None if names is None else names[i])
