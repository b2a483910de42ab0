"""Training throughput and peak memory of the BodyMap configs on this machine, and inference time per image.

    .venv/bin/python benchmarks/train.py                          # default model (128 px, batch 8) and ViT-L
    .venv/bin/python benchmarks/train.py --template data/template # the real losses (geodesics from the template)
    .venv/bin/python benchmarks/train.py --configs bodymap_vit --steps 10

A training step is what `bodymap pretrain` does per batch: forward, the loss, backward, gradient clipping and an
AdamW step (AMP on CUDA; `--amp bfloat16` also on the CPU, `--amp off` for float32). Each config runs in its own
process, so its peak resident memory (ru_maxrss: weights, optimiser state, activations, allocator caches; on CUDA
also the device's peak allocation) is its own. With `--template`, `loss ms` times the real losses alone on the
network's outputs (forward only: pixel draws, the colour terms, geodesic rows, decoding the references), where the
template's tables live. Inference is the network alone, one image, at 256 and 512 px. Times are medians after one
warm-up step; on a shared machine they are noisy.
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

from bodymap.config import LossParams, TrainParams
from bodymap.losses import total_loss
from bodymap.models import create_model
from bodymap.train.loop import amp_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import _batch, _loss_fn, _median_ms  # the synthetic batch, losses and timer of benchmarks/models.py


# name -> (training size, batch): the default as `pretrain` trains it (params.yaml's render size and batch size);
# ViT-L at the paper's 512 px, batch 1.
def _default_shape() -> tuple[int, int]:
    """params.yaml's render size and pretrain batch; 128 and 4 (the defaults) where pydantic is not installed (a GPU
    machine with torch only, scripts/gpu_check.sh)."""
    try:
        from bodymap.config import load_params
    except ImportError:
        return 128, 4
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    return params.render.image_size, params.pretrain.train.batch_size


CONFIGS = {"bodymap_vit": _default_shape(), "bodymap_vit_large": (512, 1)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def worker(
    name: str, size: int, batch: int, steps: int, template_dir: str | None, device: str, amp: str = "auto"
) -> dict:
    """Time `steps` training steps of one config (after a warm-up) and single-image inference; runs in a child."""
    dev = torch.device(device)
    template = None
    if template_dir is not None:
        from bodymap.losses import TemplateTensors
        from bodymap.template import BodyTemplate

        template = TemplateTensors.from_template(BodyTemplate.load(template_dir), dev)
    torch.manual_seed(0)
    model = create_model(name).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    amp_dtype = {"auto": "float16", "off": "float16"}.get(amp, amp)
    config = TrainParams(steps=steps, batch_size=batch, lr=1e-4, amp=amp != "off", amp_dtype=amp_dtype)
    dtype, use_amp, use_scaler = amp_settings(config, dev)  # as the training loop decides
    scaler = torch.amp.GradScaler(dev.type, enabled=use_scaler)
    loss_fn = _loss_fn(template)
    num_vertices = template.num_vertices if template is not None else 13348
    data = {k: v.to(dev) for k, v in _batch(batch, size, num_vertices).items()}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=use_amp):
            loss = loss_fn(model(data["image"], data["cse"]), data)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        _sync(dev)

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
        "amp": str(dtype).removeprefix("torch.") if use_amp else "off",
        "step_s": step_s,
        "train_images_per_s": batch / step_s,
        "train_peak_mb": _peak_mb(),
    }
    if dev.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    if template is not None:
        with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=dtype, enabled=use_amp):
            outputs = model(data["image"], data["cse"])

        def losses_only() -> None:
            total_loss(outputs, data, LossParams(), template, torch.Generator().manual_seed(0))
            _sync(dev)

        row["loss_ms"] = _median_ms(losses_only, repeats=5)
    model.eval()
    for infer_size in (256, 512):
        x = {k: v.to(dev) for k, v in _batch(1, infer_size, num_vertices).items()}

        @torch.no_grad()
        def infer(x: dict[str, torch.Tensor] = x) -> None:
            model(x["image"], x["cse"])
            _sync(dev)

        row[f"infer_ms_{infer_size}"] = _median_ms(infer, repeats=2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per config (after a warm-up)")
    parser.add_argument("--template", default=None, help="template directory: the real losses, geodesic included")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--amp", default="auto", choices=["auto", "off", "float16", "bfloat16"],
        help="autocast: auto = the training default (float16 on CUDA, float32 on the CPU)",
    )  # fmt: skip
    parser.add_argument("--sizes", nargs="*", type=int, default=None, help="override the training size per config")
    parser.add_argument("--batch", type=int, default=None, help="override the batch size of every config")
    parser.add_argument("--json", action="store_true", help="one JSON object per config instead of a table")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        size, batch = CONFIGS[args.worker]
        size = args.sizes[0] if args.sizes else size
        batch = args.batch or batch
        print(json.dumps(worker(args.worker, size, batch, args.steps, args.template, args.device, args.amp)))
        return
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"losses: {'real' if args.template else 'proxy (colour CE + silhouette)'}")  # fmt: skip
    if not args.json:
        print(f"{'config':<20}{'params':>9}{'size':>6}{'batch':>6}{'amp':>9}{'step s':>9}{'img/s':>8}{'peak MB':>9}"
              f"{'loss ms':>9}{'infer 256 ms':>14}{'infer 512 ms':>14}")  # fmt: skip
    for i, name in enumerate(args.configs):
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--device", args.device]
        cmd += ["--template", args.template] if args.template else []
        cmd += ["--amp", args.amp] + (["--batch", str(args.batch)] if args.batch else [])
        cmd += ["--sizes", str(args.sizes[min(i, len(args.sizes) - 1)])] if args.sizes else []
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: benchmark worker failed (exit {done.returncode})")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        loss = f"{row['loss_ms']:>9.1f}" if "loss_ms" in row else f"{'-':>9}"
        peak = row.get("cuda_peak_mb", row["train_peak_mb"])
        print(
            f"{name:<20}{row['params_m']:>8.1f}M{row['size']:>6}{row['batch']:>6}{row['amp']:>9}{row['step_s']:>9.2f}"
            f"{row['train_images_per_s']:>8.2f}{peak:>9.0f}{loss}"
            f"{row['infer_ms_256']:>14.0f}{row['infer_ms_512']:>14.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
