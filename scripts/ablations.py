"""Reproduce the shapes of the papers' ablation tables as DVC experiments, and collect one table.

    .venv/bin/python scripts/ablations.py queue            # queue every experiment (dvc exp run --queue)
    .venv/bin/python scripts/ablations.py run              # dvc exp run --run-all (cached upstream stages reused)
    .venv/bin/python scripts/ablations.py table            # collect: ablations.csv and ablations.md

Tables (small scale: the default params, one change each):
- BodyMap Table 5, backbones: ResNet-18, EfficientNet-B0, U-Net, ViT (default).
- BodyMap Table 6, losses: classification only, + silhouette, + geodesic, + consistency (default), and the default
  with Gaussian colour targets (3 cm) instead of the paper's one-hot ones.
- BodyMap Tables 7-8, fine-tuning: none, sparse points, dense pseudo-GT (default).
- Slim DensePose Table 6, video: no video labels (default), + flow-propagated labels, + equivariance on real video
  motion (flow pairs), + equivariance on synthetic thin-plate-spline warps.
The CSE baseline is a row of its own (from the default run). Run `make run` first so the baseline and the cached
upstream stages exist. All experiments log to the project's mlflow.db (set MLFLOW_TRACKING_URI to share another).
"""

from __future__ import annotations

import argparse

import _experiments as experiments
from _experiments import ROOT, markdown

# name -> (table, row label, --set-param overrides)
EXPERIMENTS: dict[str, tuple[str, str, list[str]]] = {
    "t5-resnet": ("BodyMap T5 backbone", "ResNet-18", ["pretrain.model.name=bodymap_resnet"]),
    "t5-efficientnet": ("BodyMap T5 backbone", "EfficientNet-B0", ["pretrain.model.name=bodymap_efficientnet"]),
    "t5-unet": ("BodyMap T5 backbone", "U-Net", ["pretrain.model.name=bodymap_unet"]),
    "t6-cls": (
        "BodyMap T6 losses",
        "cls",
        ["pretrain.losses.silhouette=0", "pretrain.losses.geodesic=0", "pretrain.losses.consistency=0"],
    ),
    "t6-sil": ("BodyMap T6 losses", "+sil", ["pretrain.losses.geodesic=0", "pretrain.losses.consistency=0"]),
    "t6-geo": ("BodyMap T6 losses", "+geo", ["pretrain.losses.consistency=0"]),
    "t6-soft": (
        "BodyMap T6 losses",
        "+con, Gaussian colour targets (3 cm)",
        ["pretrain.losses.label_sigma_cm=3", "finetune.losses.label_sigma_cm=3"],
    ),
    "t78-none": ("BodyMap T7-8 fine-tuning", "none", ["finetune.mode=none"]),
    "t78-sparse": ("BodyMap T7-8 fine-tuning", "sparse", ["finetune.mode=sparse"]),
    "slim-flow": ("Slim DensePose T6 video", "+flow-propagated labels", ["finetune.use_flow_labels=true"]),
    "slim-equivariance": (
        "Slim DensePose T6 video",
        "+equivariance (video flow pairs)",
        ["finetune.equivariance.weight=0.1"],
    ),
    "slim-equivariance-tps": (
        "Slim DensePose T6 video",
        "+equivariance (synthetic warp)",
        ["finetune.equivariance.weight=0.1", "finetune.equivariance.warp=tps"],
    ),
}
# The default run is the last row of three tables.
DEFAULT_ROWS = [
    ("BodyMap T5 backbone", "ViT (default)"),
    ("BodyMap T6 losses", "+con (default)"),
    ("BodyMap T7-8 fine-tuning", "dense pseudo-GT (default)"),
    ("Slim DensePose T6 video", "no video labels (default)"),
]
# Reported on the test sets; a choice between rows is made on the val sets (the `val 10 cm` column).
COLUMNS = {
    "val 10 cm": "bodymap/val/cm_10",
    "test GPSm AP": "bodymap/test/gpsm_ap",
    "test 10 px": "bodymap/test/window_10px",
    "test 10 cm": "bodymap/test/cm_10",
    "coco test GPSm AP": "bodymap/coco_test/gpsm_ap",
    "coco test 10 cm": "bodymap/coco_test/cm_10",
}


def queue() -> None:
    for name, (_, _, overrides) in EXPERIMENTS.items():
        experiments.queue(name, overrides)
    print(f"queued {len(EXPERIMENTS)} experiments; run them with: .venv/bin/python scripts/ablations.py run")


def collect() -> list[dict]:
    """One row per experiment (and the workspace's default run)."""
    rows: list[dict] = []
    for name, metrics in experiments.experiments().items():
        if name == "workspace":
            for table, label in DEFAULT_ROWS:
                rows.append({"table": table, "row": label, **{c: metrics.get(k) for c, k in COLUMNS.items()}})
            cse = {c: metrics.get(k.replace("bodymap/", "cse/")) for c, k in COLUMNS.items()}
            rows.append({"table": "baseline", "row": "CSE (our init)", **cse})
        elif name in EXPERIMENTS:
            table, label, _ = EXPERIMENTS[name]
            rows.append({"table": table, "row": label, **{c: metrics.get(k) for c, k in COLUMNS.items()}})
    return rows


def table() -> None:
    import pandas as pd

    rows = collect()
    if not rows:
        raise SystemExit("no metrics found: run `make run`, then queue and run the experiments")
    order = [t for t, *_ in EXPERIMENTS.values()] + ["baseline"]
    frame = pd.DataFrame(rows)
    frame["order"] = frame["table"].map({t: i for i, t in enumerate(dict.fromkeys(order))})
    frame = frame.sort_values(["order"], kind="stable").drop(columns="order")
    frame.to_csv(ROOT / "ablations.csv", index=False, float_format="%.2f")
    (ROOT / "ablations.md").write_text(markdown(frame))
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("queue", "run", "table"))
    args = parser.parse_args()
    {"queue": queue, "run": experiments.run_all, "table": table}[args.action]()


if __name__ == "__main__":
    main()
