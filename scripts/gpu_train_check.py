"""A real BodyMap training run on a CUDA GPU with AMP, through the real loop, model and losses (gpu_check.sh).

    python scripts/gpu_train_check.py --bundle build/gpu_bundle --steps 300 --size 256 --batch 8 --out /tmp/run

What `bodymap pretrain` trains (the default two-stream ViT, here with its position embedding laid out for `--size`)
on the bundle's rendered people and CSE inputs (`scripts/gpu_bundle.py`), with the loss tables on the GPU: float16
autocast with loss scaling for `--steps` steps, then bfloat16 for a sixth of them. Prints the loss curve, images/s,
the peak GPU memory and, after training, the share of the training pixels decoded within 5 / 10 cm of the truth;
writes them to `--out/figures.json`. Needs torch, timm, numpy, scipy, OpenCV and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bodymap.config import LossParams, TrainParams  # noqa: E402
from bodymap.data.augment import NO_AUGMENT  # noqa: E402
from bodymap.data.rendered import DenseDataset, Source  # noqa: E402
from bodymap.losses.total import TemplateTensors, total_loss  # noqa: E402
from bodymap.models.decode import decode_vertices  # noqa: E402
from bodymap.models.registry import create_model, model_args  # noqa: E402
from bodymap.template import BodyTemplate  # noqa: E402
from bodymap.tracking import Tracker  # noqa: E402
from bodymap.train import train  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run(
    template, dataset, size: int, steps: int, batch: int, amp_dtype: str, out: Path, workers: int, device: str
) -> dict:
    torch.manual_seed(0)
    args = model_args("bodymap_vit", img_size=size)
    model = create_model("bodymap_vit", **args)
    tensors = TemplateTensors.from_template(template, device)
    weights = LossParams()

    def loss_fn(net, batch_, generator):  # pretrain's `bodymap_loss`
        return total_loss(net(batch_["image"], batch_.get("cse")), batch_, weights, tensors, generator)

    config = TrainParams(
        steps=steps, batch_size=batch, lr=1e-3, warmup_steps=min(40, steps // 5), checkpoint_every=100,
        log_every=max(1, steps // 12), device=device, amp=True, amp_dtype=amp_dtype, workers=workers,
    )  # fmt: skip
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first: list[float] = []

    def on_step(step: int, terms: dict) -> None:
        if step == 1:
            _sync(device)
            first.append(time.perf_counter())

    result = train(model, dataset, loss_fn, config, out / amp_dtype, "bodymap_vit", args, tracker=Tracker(False),
                   on_step=on_step, restart=True)  # fmt: skip
    _sync(device)
    timed = time.perf_counter() - first[0]  # steps 2..N: the first step compiles kernels and starts the loader
    return {
        "amp": amp_dtype,
        "steps": steps,
        "batch": batch,
        "size": size,
        "seconds": round(result.seconds, 1),
        "images_per_s": round((steps - 1) * batch / timed, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
        "loss_first": round(result.history[0]["loss"], 3),
        "loss_last": round(result.history[-1]["loss"], 3),
        "curve": [(int(row["step"]), round(row["loss"], 3)) for row in result.history],
        "model": model,
    }


@torch.no_grad()
def accuracy(model, template: BodyTemplate, dataset: DenseDataset, device: str, images: int = 16) -> dict:
    """Share of the labelled pixels of the first training images whose decoded vertex lies within 5 / 10 cm."""
    model.eval()
    within = {5: 0, 10: 0}
    total = 0
    for index in range(min(images, len(dataset))):
        example = dataset.sample(index, np.random.default_rng(0))
        out = model(example["image"][None].to(device), example["cse"][None].to(device))
        vertex, _ = decode_vertices(out, template)
        gt = example["vertex"].numpy()
        y, x = np.nonzero(gt >= 0)
        pred = vertex[0][y, x]
        ok = pred >= 0
        distance = np.full(len(y), np.inf)
        distance[ok] = template.geodesics.pair(gt[y, x][ok], pred[ok])
        for cm in within:
            within[cm] += int((distance <= cm / 100).sum())
        total += len(y)
    return {f"cm_{cm}": round(100.0 * n / max(total, 1), 1) for cm, n in within.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "build" / "gpu_bundle")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="data-loader processes")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bodymap-gpu-check"))
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script itself (bfloat16 only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_train_check: torch sees no CUDA device")
    template = BodyTemplate.load(args.bundle / "template")
    dataset = DenseDataset(
        [Source.rendered(args.bundle / "render" / "train", args.bundle / "cse" / "train")],
        template.symmetry, template.colors, template.chart, NO_AUGMENT,
    )  # fmt: skip
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}, {len(dataset)} images at {args.size} px")
    runs = [("float16", args.steps), ("bfloat16", max(10, args.steps // 6))]
    if args.device != "cuda":
        runs = [("bfloat16", args.steps)]  # float16 autocast runs on CUDA only
    figures = []
    for i, (amp_dtype, steps) in enumerate(runs):
        row = run(template, dataset, args.size, steps, args.batch, amp_dtype, args.out, args.workers, args.device)
        model = row.pop("model")
        if i == 0:
            row.update(accuracy(model, template, dataset, args.device))
        figures.append(row)
        curve = " ".join(f"{s}:{v}" for s, v in row["curve"])
        head = f"{amp_dtype}: {steps} steps x {args.batch} in {row['seconds']} s, {row['images_per_s']} img/s"
        print(f"{head}, peak GPU {row['peak_gpu_mb']} MB, loss {row['loss_first']} -> {row['loss_last']}")
        cm = f"; train pixels within 5/10 cm: {row['cm_5']}/{row['cm_10']} %" if "cm_10" in row else ""
        print(f"  curve {curve}{cm}", flush=True)
        if not all(np.isfinite(v) for _, v in row["curve"]) or row["loss_last"] >= row["loss_first"]:
            raise SystemExit(f"{amp_dtype}: the loss did not fall (or is not finite): {curve}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
