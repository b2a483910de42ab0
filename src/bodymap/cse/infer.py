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
from bodymap.shards import merge_shards, run_shards, shard_batches, write_shard_record
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


def infer_sets(
    checkpoint: Path,
    sets: dict[str, list[ImageEntry]],
    out: Path,
    template_name: str,
    device: str | torch.device,
    vertex_chunk: int = 16384,
    batch_size: int = 8,
    shard: int = 0,
    num_shards: int = 1,
) -> dict[str, int]:
    """CSE of a trained checkpoint on every set into `out/<set>/` (`infer_split`), or on one shard of each set's
    batches with a `shard.json` beside them (`bodymap.shards`). Returns set -> images in the whole set."""
    device = torch.device(device)
    model = load_cse_model(checkpoint, device)
    for name, images in sets.items():
        mine = shard_batches(images, shard, num_shards, batch_size)
        infer_split(model, mine, out / name, template_name, device, vertex_chunk, batch_size)
    counts = {name: len(images) for name, images in sets.items()}
    if num_shards > 1:
        write_shard_record(out, kind="cse", shard=shard, num_shards=num_shards, batch_size=batch_size, sets=counts)
    return counts


def infer_sets_in_workers(
    checkpoint: Path,
    sets: dict[str, list[ImageEntry]],
    out: Path,
    template_name: str,
    device: torch.device,
    vertex_chunk: int,
    workers: int,
) -> dict[str, int]:
    """`infer_sets` split into `workers` shards run by as many processes, merged into `out` (the same files)."""
    if workers <= 1:
        return infer_sets(checkpoint, sets, out, template_name, device, vertex_chunk)
    import shutil
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".cse-shards.", dir=out))
    try:
        shard_dirs = [scratch / f"shard-{k}" for k in range(workers)]
        jobs = [
            (checkpoint, sets, d, template_name, str(device), vertex_chunk, 8, k, workers)
            for k, d in enumerate(shard_dirs)
        ]
        run_shards(infer_sets, jobs, workers)
        return merge_shards(shard_dirs, out, "cse")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
