"""Training throughput and peak memory of the BodyMap configs on this machine, and inference time per image.

    .venv/bin/python benchmarks/train.py                          # default model (128 px, batch 8) and ViT-L
    .venv/bin/python benchmarks/train.py --template data/template # the real losses (geodesics from the template)
    .venv/bin/python benchmarks/train.py --configs bodymap_vit --steps 10

A training step is what `bodymap pretrain` does per batch: forward, the loss, backward, gradient clipping and an
AdamW step (AMP on CUDA). Each config runs in its own process, so its peak resident memory (ru_maxrss: weights,
optimiser state, activations, allocator caches) is its own. Inference is the network alone, one image, at 256 and
512 px. Times are medians after one warm-up step; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bodymap.config import load_params
from bodymap.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import _batch, _loss_fn, _median_ms  # the synthetic batch, losses and timer of benchmarks/models.py

# name -> (training size, batch): the default as `pretrain` trains it (params.yaml's render size and batch size);
# ViT-L at the paper's 512 px, batch 1.
_PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
CONFIGS = {
    "bodymap_vit": (_PARAMS.render.image_size, _PARAMS.pretrain.train.batch_size),
    "bodymap_vit_large": (512, 1),
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def worker(name: str, size: int, batch: int, steps: int, template_dir: str | None, device: str) -> dict:
    """Time `steps` training steps of one config (after a warm-up) and single-image inference; runs in a child."""
    template = None
    if template_dir is not None:
        from bodymap.losses import TemplateTensors
        from bodymap.template import BodyTemplate

        template = TemplateTensors.from_template(BodyTemplate.load(template_dir))
    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model(name).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    use_amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = _loss_fn(template)
    num_vertices = template.num_vertices if template is not None else 13348
    data = {k: v.to(dev) for k, v in _batch(batch, size, num_vertices).items()}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
            loss = loss_fn(model(data["image"], data["cse"]), data)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step()
        if i:  # the first step warms up the allocator and kernels
            times.append(time.perf_counter() - start)
        print(f"  {name}: step {i}/{steps} {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    step_s = statistics.median(times)
    row = {
        "config": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "size": size,
        "batch": batch,
        "step_s": step_s,
        "train_images_per_s": batch / step_s,
        "train_peak_mb": _peak_mb(),
    }
    model.eval()
    for infer_size in (256, 512):
        x = {k: v.to(dev) for k, v in _batch(1, infer_size, num_vertices).items()}

        @torch.no_grad()
        def infer(x: dict[str, torch.Tensor] = x) -> None:
            model(x["image"], x["cse"])
            if dev.type == "cuda":
                torch.cuda.synchronize()

        row[f"infer_ms_{infer_size}"] = _median_ms(infer, repeats=2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per config (after a warm-up)")
    parser.add_argument("--template", default=None, help="template directory: the real losses, geodesic included")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per config instead of a table")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        size, batch = CONFIGS[args.worker]
        print(json.dumps(worker(args.worker, size, batch, args.steps, args.template, args.device)))
        return
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"losses: {'real' if args.template else 'proxy (colour CE + silhouette)'}")  # fmt: skip
    if not args.json:
        print(f"{'config':<20}{'params':>9}{'size':>6}{'batch':>6}{'step s':>9}{'img/s':>8}{'peak MB':>9}"
              f"{'infer 256 ms':>14}{'infer 512 ms':>14}")  # fmt: skip
    for name in args.configs:
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--device", args.device]
        cmd += ["--template", args.template] if args.template else []
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: benchmark worker failed (exit {done.returncode})")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(
            f"{name:<20}{row['params_m']:>8.1f}M{row['size']:>6}{row['batch']:>6}{row['step_s']:>9.2f}"
            f"{row['train_images_per_s']:>8.2f}{row['train_peak_mb']:>9.0f}"
            f"{row['infer_ms_256']:>14.0f}{row['infer_ms_512']:>14.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
