"""BodyMap training losses: colour classification, silhouette, geodesic and consistency (Secs. 3.3-3.4).

weights = params.pretrain.losses  # a LossParams section
template_tensors = TemplateTensors.from_template(template, device)
loss, logged = total_loss(model(batch["image"], batch["cse"]), batch, weights, template_tensors, generator)
"""

from bodymap.losses.classification import (
    chart_weight_table,
    pixel_classification_loss,
    pixel_weights,
    soft_targets,
)
from bodymap.losses.geodesic import consistency_loss, geodesic_loss, sample_pixels, vertex_log_probs
from bodymap.losses.silhouette import soft_iou_loss
from bodymap.losses.total import TemplateTensors, total_loss

__all__ = [
    "TemplateTensors",
    "chart_weight_table",
    "consistency_loss",
    "geodesic_loss",
    "pixel_classification_loss",
    "pixel_weights",
    "sample_pixels",
    "soft_iou_loss",
    "soft_targets",
    "total_loss",
    "vertex_log_probs",
]
