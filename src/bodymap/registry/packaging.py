"""The deployable model: CSE + BodyMap + the template colour code in one `nn.Module`, as the registry stores it.

`BodyMapPipeline.forward(image)` runs CSE, decodes its vertex map, renders it in the colour code, runs BodyMap and
returns per-pixel colour-code values and the foreground probability — a single float tensor in, a single tensor
out, which is what `mlflow.pytorch` serves. Turning colours into vertex ids (a nearest-colour search over the
template) happens outside, with the template files logged next to the model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bodymap.cse.decode import decode_image
from bodymap.cse.model import CseNet
from bodymap.models.base import BodyMapNet
from bodymap.models.inputs import cse_input


class BodyMapPipeline(nn.Module):
    """Photo → correspondences, end to end.

    Args:
        cse: the trained CSE network. bodymap: the trained BodyMap network. colors: [V, 3] uint8 colour code.
        input_size: the long side photos are resized to before the networks (their training resolution).
    Forward:
        image: [B, 3, H, W] float32 RGB in [0, 1].
    Returns:
        [B, 4, H, W] float32: the predicted colour code (R, G, B as 0..255 values, arg max per channel) and the
        foreground probability.
    """

    def __init__(self, cse: CseNet, bodymap: BodyMapNet, colors: np.ndarray, input_size: int = 128) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.cse = cse
        self.bodymap = bodymap
        self.register_buffer("colors", torch.as_tensor(np.asarray(colors, np.int64)), persistent=True)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        cse_input_t = None
        if self.bodymap.uses_cse:
            out = self.cse(image)
            score = torch.softmax(out["fg_logits"], dim=1)[:, 1]  # (B, H, W)
            table = self.cse.vertex_embedding()
            vertex = torch.stack([decode_image(out["embedding"][b], score[b], table) for b in range(image.shape[0])])
            cse_input_t = cse_input(vertex, score, self.colors)
        pred = self.bodymap(image, cse_input_t)
        prob = torch.sigmoid(pred.silhouette.float())  # (B, 1, H, W)
        rgb = torch.zeros_like(prob).expand(-1, 3, -1, -1).clone()  # (B, 3, H, W), 0 off the person
        b, y, x = torch.nonzero(prob[:, 0] > 0.5, as_tuple=True)
        rgb[b, :, y, x] = pred.colours_at(b, y, x).float()
        return torch.cat([rgb, prob], dim=1)


def vertices_from_output(output: np.ndarray, decode_colors, threshold: float = 0.5) -> np.ndarray:
    """[B, 4, H, W] pipeline output → [B, H, W] int32 vertex ids (-1 background) via the template's colour decoder."""
    rgb = np.moveaxis(output[:, :3], 1, -1)  # (B, H, W, 3)
    fg = output[:, 3] > threshold
    vertex = np.full(fg.shape, -1, np.int32)
    if fg.any():
        vertex[fg] = decode_colors(rgb[fg])
    return vertex
