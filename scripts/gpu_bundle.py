"""Prepare what `scripts/gpu_check.sh` carries to a GPU machine that has torch but not this project's environment.

    .venv/bin/python scripts/gpu_bundle.py                    # -> build/gpu_bundle (about 20 MB), a few minutes
    .venv/bin/python scripts/gpu_bundle.py --images 32 --size 256 --out build/gpu_bundle

The bundle (git-ignored) holds:
- `template/`: the Anny template with landmark geodesics (`--landmarks`, default 256), pictures left out;
- `render/train/`: `--images` rendered people at `--size` px (docs/formats.md), the training split of the run;
- `cse/train/`: CSE outputs for them, from a CSE network trained here for `--cse-steps` steps with the real loop
  (BodyMap's second input; a rough estimate, as early in a real run);
- `wheels/`: the pure-Python wheels pytest needs (pytest, pluggy, iniconfig, packaging, Pygments), at the versions
  of requirements.lock, which gpu_check.sh unpacks instead of installing anything;
- `bundle.json`: what it holds and how it was made.

Everything else the check needs is on the GPU machine (torch, timm, numpy, scipy, OpenCV, PyYAML) or in `src/`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ("pytest", "pluggy", "iniconfig", "packaging", "Pygments")


def pinned(name: str) -> str:
    """`name==version` from requirements.lock."""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.strip()
    raise SystemExit(f"requirements.lock pins no {name}")


def build_template(out: Path, landmarks: int) -> None:
    from bodymap.config import Geodesics, TemplateParams
    from bodymap.template.stage import build_template as build

    build(TemplateParams(geodesics=Geodesics(mode="landmarks", landmarks=landmarks), picture_size=64), out)
    shutil.rmtree(out / "pictures", ignore_errors=True)


def render_train(template: Path, out: Path, images: int, size: int) -> None:
    from bodymap.config import RenderParams
    from bodymap.render.run import render_dataset
    from bodymap.render.settings import build_settings

    params = RenderParams.model_validate(
        {
            "image_size": size,
            "identities": 8,
            "train_images": images,
            "val_images": 0,
            "test_images": 0,
            "workers": 2,
            "contact_sheet": 0,
            "coco_like": {"train_images": 0, "val_images": 0, "test_images": 0},
            "video": {"sequences": 0, "train_sequences": 0},
        }
    )
    scratch = out.with_name(out.name + ".full")
    render_dataset(build_settings(params), template, scratch)
    out.mkdir(parents=True, exist_ok=True)
    shutil.move(str(scratch / "train"), str(out / "train"))
    shutil.rmtree(scratch)


def cse_outputs(template_dir: Path, render: Path, out: Path, steps: int) -> None:
    """Train CSE briefly on the rendered split with the real loop and loss, then infer it on the split."""
    import torch

    from bodymap.config import CseParams
    from bodymap.cse.infer import infer_split, load_cse_model
    from bodymap.cse.stage import build_cse, make_loss
    from bodymap.data.augment import NO_AUGMENT
    from bodymap.data.images import list_images
    from bodymap.data.rendered import DenseDataset, Source
    from bodymap.template import BodyTemplate
    from bodymap.tracking import Tracker
    from bodymap.train import train

    template = BodyTemplate.load(template_dir)
    p = CseParams.model_validate({"train": {"steps": steps, "batch_size": 4, "warmup_steps": 2, "device": "cpu"}})
    model, args = build_cse(template, p)
    dataset = DenseDataset(
        [Source.rendered(render / "train")], template.symmetry, template.colors, template.chart, NO_AUGMENT
    )
    model_dir = out.parent / "cse-model"
    train(model, dataset, make_loss(template, p), p.train, model_dir, "cse", args,
          tracker=Tracker(enabled=False))  # fmt: skip
    device = torch.device("cpu")
    trained = load_cse_model(model_dir / "last.pt", device)
    infer_split(trained, list_images(render / "train"), out / "train", template.name, device, p.vertex_chunk)
    shutil.rmtree(model_dir)


def wheels(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    specs = [pinned(name) for name in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(out)]
    subprocess.run([*cmd, *specs], check=True)
    names = sorted(p.name for p in out.glob("*.whl"))
    if len(names) != len(WHEELS) or not all(n.endswith("-py3-none-any.whl") for n in names):
        raise SystemExit(f"expected {len(WHEELS)} pure-Python wheels in {out}, got {names}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_bundle")
    parser.add_argument("--images", type=int, default=32, help="rendered training images")
    parser.add_argument("--size", type=int, default=256, help="their size in px")
    parser.add_argument("--landmarks", type=int, default=256, help="landmark geodesics of the template")
    parser.add_argument("--cse-steps", type=int, default=40, help="CSE training steps for the CSE inputs")
    args = parser.parse_args()
    start = time.monotonic()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    build_template(out / "template", args.landmarks)
    render_train(out / "template", out / "render", args.images, args.size)
    cse_outputs(out / "template", out / "render", out / "cse", args.cse_steps)
    names = wheels(out / "wheels")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    record = {
        "images": args.images,
        "size": args.size,
        "landmarks": args.landmarks,
        "cse_steps": args.cse_steps,
        "wheels": names,
        "bytes": size,
        "seconds": round(time.monotonic() - start, 1),
    }
    (out / "bundle.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{out}: {size / 2**20:.1f} MiB in {record['seconds']} s")


if __name__ == "__main__":
    main()
