"""Running trained models: a whole split into a prediction set, or `bodymap predict` on photos.

BodyMap refines CSE, so prediction runs the CSE model first and feeds its vertex map (in the template colour
code) and foreground probability to the correspondence transformer (BodyMap Sec. 3.2).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bodymap.config import Params
from bodymap.cse.infer import load_cse_model
from bodymap.data.images import ImageEntry
from bodymap.data.letterbox import Letterbox
from bodymap.errors import BodymapError, input_error
from bodymap.eval.predictions import PredictionWriter
from bodymap.io import atomic_dir, read_cse, read_image, read_json, save_npz, write_image
from bodymap.log import progress
from bodymap.models.base import BodyMapNet
from bodymap.models.decode import decode_vertices
from bodymap.models.inputs import cse_input
from bodymap.models.registry import create_model
from bodymap.registry.packaging import BodyMapPipeline, vertices_from_output
from bodymap.template import BodyTemplate
from bodymap.tracking import prepare_store
from bodymap.train.checkpoint import load_checkpoint
from bodymap.train.distributed import select_device

log = logging.getLogger(__name__)


def load_bodymap(checkpoint: str | Path, device: torch.device | str = "cpu") -> BodyMapNet:
    """Rebuild a BodyMap network from a training checkpoint (its registry name and arguments are stored in it)."""
    state = load_checkpoint(checkpoint)
    model = create_model(state["model_name"], **state["model_args"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict_images(
    model: BodyMapNet,
    template: BodyTemplate,
    images: list[ImageEntry],
    cse_dir: Path | None,
    out_dir: Path,
    device: torch.device,
    batch_size: int = 8,
    size: int | None = None,
) -> int:
    """Predict every image of a set into a dense prediction set (`<key>.npz` + predictions.json), atomically.

    Each photo and its CSE maps are letterboxed to `size` (the training resolution) as in training, the network runs
    on the batch, and its vertex and score maps go back to the photo's own size (`bodymap.data.letterbox`).

    Args:
        cse_dir: the CSE outputs for these images (required when the model takes the CSE input).
        size: the network input side; None: each photo's long side (scale 1, padding only).
    Returns:
        number of images.
    """
    if model.uses_cse and cse_dir is None:
        raise BodymapError(f"{out_dir}: this model needs CSE outputs for its images; none were given")
    items = images
    colors = torch.as_tensor(template.colors.astype(np.int64), device=device)
    with atomic_dir(out_dir) as tmp:
        writer = PredictionWriter(tmp, template_name=template.name, kind="dense")
        for start in progress(range(0, len(items), batch_size), f"predict {out_dir.name}", logger=log):
            batch = items[start : start + batch_size]
            examples, boxes = [], []
            for entry in batch:
                example = {"image": read_image(entry.path)}
                if model.uses_cse:
                    example["cse_vertex"], example["cse_score"] = read_cse(cse_dir / f"{entry.key}.npz")
                box = Letterbox.of(example["image"], size or max(example["image"].shape[:2]))
                boxes.append(box)
                examples.append(box.example_to_network(example))
            # Without a common size (size None) photos of mixed sizes go one at a time.
            sides = [box.size for box in boxes]
            groups = [range(len(batch))] if len(set(sides)) == 1 else [[i] for i in range(len(batch))]
            for group in groups:
                image_t = torch.from_numpy(np.stack([examples[i]["image"] for i in group]).transpose(0, 3, 1, 2))
                image_t = image_t.float().div(255.0).to(device)
                cse_t = None
                if model.uses_cse:
                    vertex = torch.from_numpy(np.stack([examples[i]["cse_vertex"] for i in group]).astype(np.int64))
                    score = torch.from_numpy(np.stack([examples[i]["cse_score"] for i in group]))
                    cse_t = cse_input(vertex.to(device), score.to(device), colors)
                vertex, score = decode_vertices(model(image_t, cse_t), template)
                for k, i in enumerate(group):
                    back = boxes[i].maps_to_image({"vertex": vertex[k], "score": score[k]})
                    writer.add_dense(int(batch[i].image_id), back["vertex"], score=back["score"], name=batch[i].key)
        writer.close()
    return len(items)


# --------------------------------------------------------------------------------------------- bodymap predict
@dataclass
class Predictor:
    """The deployable CSE + BodyMap module with its template, ready for photos."""

    pipeline: BodyMapPipeline
    template: BodyTemplate
    size: int

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One photo [H, W, 3] uint8 → (vertex [H, W] int32, -1 background; foreground probability [H, W]).

        The photo is letterboxed to `size` x `size` (the training resolution), exactly as training and evaluation
        do (`bodymap.data.letterbox`), and the maps come back to the photo's size (nearest-neighbour).
        """
        box = Letterbox.of(rgb, self.size)
        device = next(self.pipeline.parameters()).device
        image_t = torch.from_numpy(box.image_to_network(rgb).transpose(2, 0, 1)[None].copy()).float().div(255.0)
        output = self.pipeline(image_t.to(device)).cpu().numpy()  # (1, 4, size, size)
        vertex = vertices_from_output(output, self.template.decode_colors)[0]
        back = box.maps_to_image({"vertex": vertex.astype(np.int32), "score": output[0, 3]})
        vertex, score = back["vertex"], back["score"]
        return vertex, score

    def in_boxes(self, rgb: np.ndarray, boxes: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """One photo, person by person, as DensePose-RCNN's head sees a detection: each box (x, y, w, h), grown by
        `margin` of its size on every side and clipped to the photo, is cropped, letterboxed and predicted on its
        own; the crops' maps are pasted back (where people overlap, the more confident crop wins). Outside every
        box is background. Returns (vertex [H, W] int32, score [H, W] float32)."""
        h, w = rgb.shape[:2]
        vertex = np.full((h, w), -1, np.int32)
        score = np.zeros((h, w), np.float32)
        for x0, y0, x1, y1 in crop_windows(boxes, h, w, margin):
            crop_vertex, crop_score = self(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            better = crop_score > score[y0:y1, x0:x1]
            vertex[y0:y1, x0:x1][better] = crop_vertex[better]
            score[y0:y1, x0:x1][better] = crop_score[better]
        return vertex, score


def crop_windows(boxes: np.ndarray, height: int, width: int, margin: float) -> list[tuple[int, int, int, int]]:
    """Integer crop windows (x0, y0, x1, y1) of boxes [N, 4] (x, y, w, h): grown by `margin` x size per side,
    rounded outwards, clipped to the photo; empty windows dropped."""
    windows = []
    for x, y, bw, bh in np.asarray(boxes, np.float64).reshape(-1, 4):
        x0, y0 = int(np.floor(max(x - margin * bw, 0))), int(np.floor(max(y - margin * bh, 0)))
        x1, y1 = int(np.ceil(min(x + bw * (1 + margin), width))), int(np.ceil(min(y + bh * (1 + margin), height)))
        if x1 > x0 and y1 > y0:
            windows.append((x0, y0, x1, y1))
    return windows


def read_boxes(path: Path) -> dict[str, np.ndarray]:
    """Person boxes by image file name (its base name) from a COCO JSON (`images` with `file_name`, `annotations`
    with `image_id`, `bbox`; only category `person`, or every annotation when there are no categories)."""
    data = read_json(path, "the person boxes")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise input_error(path, None, None, "expected a COCO JSON object with images and annotations lists")
    person = next((c.get("id") for c in data.get("categories") or [] if c.get("name") == "person"), None)
    names: dict[object, str] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise input_error(path, f"images[{index}]", "file_name", "expected an object with id and file_name")
        names[image["id"]] = Path(image["file_name"]).name
    boxes: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for index, ann in enumerate(data["annotations"]):
        record = f"annotation id {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotations[{index}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in names:
            raise input_error(path, record, "image_id", "missing, or not an id in images")
        if person is not None and ann.get("category_id") != person:
            continue
        box = ann.get("bbox")
        valid = isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
        if not valid or min(box[2:]) <= 0:
            raise input_error(path, record, "bbox", f"expected [x, y, w, h] with w, h > 0, got {box!r}")
        boxes[names[ann["image_id"]]].append([float(v) for v in box])
    return {name: np.asarray(b, np.float64).reshape(-1, 4) for name, b in boxes.items()}


def load_predictor(
    model: str,
    cse_model: Path | None = None,
    template_dir: Path | None = None,
    device: str = "auto",
    size: int | None = None,
) -> Predictor:
    """From training checkpoints (`model` = BodyMap last.pt, with `cse_model` and `template_dir`), or from the
    MLflow registry (`model` = `models:/<name>@champion` or any MLflow model URI: the registered module carries
    CSE, BodyMap and the colour code, and its template files travel with it)."""
    dev = select_device(device)
    if "://" in model or model.startswith("models:/"):
        import mlflow

        prepare_store()
        local = Path(mlflow.artifacts.download_artifacts(model))
        pipeline = mlflow.pytorch.load_model(model, map_location=dev).eval()
        template = BodyTemplate.load(local / "extra_files")
        return Predictor(pipeline, template, size or pipeline.input_size)
    if cse_model is None or template_dir is None:
        raise BodymapError("a checkpoint --model needs --cse-model and --template (a models:/ URI carries both)")
    template = BodyTemplate.load(template_dir)
    size = size or int(load_checkpoint(model)["model_args"].get("img_size", 128))
    pipeline = BodyMapPipeline(load_cse_model(cse_model, dev), load_bodymap(model, dev), template.colors, size)
    return Predictor(pipeline.to(dev).eval(), template, size)


def correspondence_image(vertex: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Vertex map → RGB in the template colour code, black background. [H, W] → [H, W, 3] uint8."""
    rgb = colors[np.maximum(vertex, 0)].copy()
    rgb[vertex < 0] = 0
    return rgb


def overlay(photo: np.ndarray, vertex: np.ndarray, colors: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The correspondence colours blended over the photo where the person is."""
    out = photo.astype(np.float32)
    fg = vertex >= 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[vertex[fg]].astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument(
        "--model",
        required=True,
        help="BodyMap checkpoint (models/finetune/last.pt) or an MLflow model URI (models:/bodymap@champion)",
    )
    parser.add_argument("--cse-model", type=Path, default=None, help="CSE checkpoint (with a checkpoint --model)")
    parser.add_argument("--template", type=Path, default=None, help="template directory (with a checkpoint --model)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--size", type=int, default=None, help="network input long side (default: training size)")
    parser.add_argument(
        "--boxes", type=Path, default=None,
        help="COCO JSON of person boxes (images by file name + annotations): predict each person's crop on its own",
    )  # fmt: skip
    parser.add_argument("--box-margin", type=float, default=0.1, help="with --boxes: crop margin, share of box size")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        elif path.exists():
            files.append(path)
        else:
            raise BodymapError(f"{path}: no such image or folder")
    if not files:
        raise BodymapError(f"no images found in {', '.join(map(str, paths))}")
    return files


def main(args: argparse.Namespace, params: Params | None = None) -> int:
    files = _expand(args.images)
    boxes = read_boxes(args.boxes) if args.boxes is not None else None
    if boxes is not None:
        missing = [path.name for path in files if path.name not in boxes]
        if missing:
            raise input_error(args.boxes, None, "images", f"no entry for {missing[0]!r} ({len(missing)} photos in all)")
    predictor = load_predictor(args.model, args.cse_model, args.template, args.device, args.size)
    colors = predictor.template.colors
    args.out.mkdir(parents=True, exist_ok=True)
    for path in progress(files, "predict", logger=log):
        photo = read_image(path)
        if boxes is None:
            vertex, score = predictor(photo)
        else:
            vertex, score = predictor.in_boxes(photo, boxes[path.name], args.box_margin)
        write_image(args.out / f"{path.stem}_correspondence.png", correspondence_image(vertex, colors))
        write_image(args.out / f"{path.stem}_overlay.png", overlay(photo, vertex, colors))
        save_npz(args.out / f"{path.stem}_vertex.npz", vertex=vertex.astype(np.int32), score=score.astype(np.float16))
        log.info("%s: %d foreground pixels", path.name, int((vertex >= 0).sum()))
    return 0
