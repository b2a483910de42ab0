"""Parameter counts and CPU speed of every registered BodyMap network.

    .venv/bin/python benchmarks/models.py                       # all small models, 128 px, batch 8
    .venv/bin/python benchmarks/models.py --template DIR        # also the real losses (geodesics from DIR)
    .venv/bin/python benchmarks/models.py --include-large       # also ViT-L (batch 1; ~2.5 GB of weights)

Per model: parameters, forward + backward ms per batch at `--size` (the training step without the optimiser), and
for the default model inference ms per image at 256 and 512 px. Without `--template` the loss is the colour
classification + silhouette terms on a random colour code (the geodesic terms need the template's geodesics).
Times are medians over `--repeats` runs after one warm-up; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bodymap.config import LossParams
from bodymap.losses import (
    TemplateTensors,
    chart_weight_table,
    pixel_classification_loss,
    pixel_weights,
    soft_iou_loss,
    total_loss,
)
from bodymap.models import DEFAULT_MODEL, MODELS, BodyMapOutput, create_model, list_models


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _batch(batch: int, size: int, num_vertices: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic batch with a person-sized foreground (about 30% of the pixels), like the renders."""
    g = torch.Generator().manual_seed(seed)
    vertex = torch.full((batch, size, size), -1, dtype=torch.int64)
    top, bottom, left, right = size // 5, size - size // 5, size // 3, 2 * size // 3
    person = torch.randint(0, num_vertices, (batch, bottom - top, right - left), generator=g)
    vertex[:, top:bottom, left:right] = person
    return {
        "image": torch.rand(batch, 3, size, size, generator=g),
        "cse": torch.rand(batch, 4, size, size, generator=g),
        "vertex": vertex,
        "chart": torch.randint(1, 25, (batch, size, size), generator=g) * (vertex >= 0),
        "mask": (vertex >= 0).float(),
        "weight": torch.ones(batch, size, size),
    }


def _loss_fn(template: TemplateTensors | None) -> Callable[[BodyMapOutput, dict[str, torch.Tensor]], torch.Tensor]:
    if template is not None:
        weights = LossParams()
        return lambda out, batch: total_loss(out, batch, weights, template, torch.Generator().manual_seed(0))[0]
    colors = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(13348, 3)))
    table = chart_weight_table(2.0, 2.0)

    def proxy(out: BodyMapOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        w = pixel_weights(batch["vertex"], batch["chart"], table, batch["weight"])
        b, y, x = torch.nonzero(batch["vertex"] >= 0, as_tuple=True)  # the labelled pixels, as in training
        cls = pixel_classification_loss(out.logits_at(b, y, x), colors[batch["vertex"][b, y, x]], w[b, y, x])
        return cls + soft_iou_loss(out.silhouette, batch["mask"], batch["weight"])

    return proxy


def bench_model(
    name: str, batch: int, size: int, repeats: int, template: TemplateTensors | None
) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    model = create_model(name).train()
    params = sum(p.numel() for p in model.parameters())
    num_vertices = template.num_vertices if template is not None else 13348
    data = _batch(batch, size, num_vertices)
    loss_fn = _loss_fn(template)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(data["image"], data["cse"]), data).backward()

    row: dict[str, float | int | str] = {"model": name, "params": params, "batch": batch, "size": size}
    row["train_ms_per_batch"] = _median_ms(step, repeats)
    row["train_images_per_s"] = 1000.0 * batch / float(row["train_ms_per_batch"])
    if name == DEFAULT_MODEL:
        model.eval()
        for infer_size in (256, 512):
            x = _batch(1, infer_size, num_vertices)

            @torch.no_grad()
            def infer(x: dict[str, torch.Tensor] = x) -> None:
                model(x["image"], x["cse"])

            row[f"infer_ms_{infer_size}"] = _median_ms(infer, repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--template", default=None, help="template directory: time the real losses")
    parser.add_argument("--include-large", action="store_true", help="also time bodymap_vit_large at batch 1")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model instead of a table")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    template = None
    if args.template is not None:
        from bodymap.template import BodyTemplate

        template = TemplateTensors.from_template(BodyTemplate.load(args.template))
    names = args.models or list_models(include_large=args.include_large)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, losses: {'real' if template else 'proxy'}")
    if not args.json:
        head = f"{'model':<22}{'params':>14}{'batch':>7}{'fwd+bwd ms':>12}{'img/s':>8}"
        print(head + f"{'infer 256':>11}{'infer 512':>11}")
    for name in names:
        batch = 1 if "large" in MODELS[name].tags else args.batch
        row = bench_model(name, batch, args.size, args.repeats, template)
        if args.json:
            print(json.dumps(row))
            continue
        infer = [f"{row[k]:>11.0f}" if k in row else f"{'':>11}" for k in ("infer_ms_256", "infer_ms_512")]
        print(
            f"{name:<22}{row['params']:>14,}{row['batch']:>7}{row['train_ms_per_batch']:>12.0f}"
            f"{row['train_images_per_s']:>8.1f}{''.join(infer)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
