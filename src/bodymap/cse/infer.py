"""CSE inference over image folders, written in the evaluator's dense prediction format (docs/formats.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bodymap.cse.decode import decode_image
from bodymap.cse.model import CseNet
from bodymap.data.images import ImageEntry
from bodymap.errors import BodymapError
from bodymap.io import atomic_dir, read_image, save_npz, write_json
from bodymap.log import progress
from bodymap.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

EMBEDDING_STRIDE = 4


def load_cse_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> CseNet:
    """Rebuild a trained CseNet from its checkpoint (model args are stored in it)."""
    state = load_checkpoint(checkpoint)
    if state["model_name"] != "cse":
        raise BodymapError(f"{checkpoint}: field 'model_name': expected 'cse', got {state['model_name']!r}")
    args = state["model_args"]
    basis = torch.zeros(args["num_vertices"], args["basis_k"])
    model = CseNet(
        args["backbone"], args["embed_dim"], basis, args.get("decoder_channels", 64), args.get("input_scale", 1.0)
    )
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict(model: CseNet, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """images [B,3,H,W] in [0,1] → embedding [B,D,H,W], score [B,H,W] (foreground probability)."""
    out = model(images)
    return {"embedding": out["embedding"], "score": torch.softmax(out["fg_logits"], dim=1)[:, 1]}


@torch.no_grad()
def infer_split(
    model: CseNet,
    images: list[ImageEntry],
    out_dir: Path,
    template_name: str,
    device: torch.device,
    vertex_chunk: int = 16384,
    batch_size: int = 8,
) -> int:
    """Run CSE on every image of a set; write `<key>.npz` + `predictions.json` into out_dir atomically.

    Each npz: vertex [H,W] int32 (-1 background), score [H,W] float16, embedding [D,H/4,W/4] float16, stride.
    Returns the number of images.
    """
    items = images
    vertex_embedding = model.vertex_embedding().to(device)
    index = []
    with atomic_dir(out_dir) as tmp:
        for start in progress(range(0, len(items), batch_size), f"cse {out_dir.name}", logger=log):
            batch = items[start : start + batch_size]
            arrays = [read_image(entry.path) for entry in batch]
            # Images of one split share a size; mixed sizes (real photos) go one at a time.
            groups = [arrays] if len({a.shape for a in arrays}) == 1 else [[a] for a in arrays]
            outputs = []
            for group in groups:
                tensor = torch.from_numpy(np.stack(group).transpose(0, 3, 1, 2)).float().div(255.0).to(device)
                pred = predict(model, tensor)
                outputs += [(pred["embedding"][i], pred["score"][i]) for i in range(len(group))]
            for entry, (embedding, score) in zip(batch, outputs, strict=True):
                vertex = decode_image(embedding, score, vertex_embedding, vertex_chunk)
                small = F.avg_pool2d(embedding[None], EMBEDDING_STRIDE, ceil_mode=True)[0]
                name = f"{entry.key}.npz"
                save_npz(
                    tmp / name,
                    vertex=vertex.cpu().numpy().astype(np.int32),
                    score=score.cpu().numpy().astype(np.float16),
                    embedding=small.cpu().numpy().astype(np.float16),
                    stride=np.array(EMBEDDING_STRIDE),
                )
                index.append({"image_id": entry.image_id, "file": name})
        write_json(tmp / "predictions.json", {"template": template_name, "kind": "dense", "images": index})
    return len(items)
