"""Run-to-run spread: the headline BodyMap-vs-CSE figures over several training seeds, as mean ± spread.

    .venv/bin/python scripts/seeds.py queue [--seeds 1 2]   # queue one DVC experiment per extra seed
    .venv/bin/python scripts/seeds.py run                   # dvc exp run --run-all (render, template: from the cache)
    .venv/bin/python scripts/seeds.py table                 # seeds.csv, seeds.md: per seed and mean ± sd (min..max)

Each experiment `seed-<n>` sets the seed of every training stage (`cse_init`, `pretrain`, `finetune`) to n; the
rendered data stay the same, so the spread is what training alone moves. The workspace's own run (seed 0 by
default) is one more sample. A difference between two models (or two settings) is worth reporting when it is well
outside the spread printed here. Figures are on the test sets (report only; choices are made on val).
"""

from __future__ import annotations

import argparse
import statistics

import _experiments as experiments
from _experiments import ROOT, markdown

STAGES = ("cse_init", "pretrain", "finetune")
# Column -> metric key with {model} for bodymap / cse.
FIGURES = {
    "test 10 cm": "{model}/test/cm_10",
    "test 5 cm": "{model}/test/cm_5",
    "test 10 px": "{model}/test/window_10px",
    "test 10 px scaled": "{model}/test/window_scaled_10px",
    "test GPSm AP": "{model}/test/gpsm_ap",
    "test GPSm AP (GT boxes)": "{model}/test/gtbox_gpsm_ap",
    "coco test GPSm AP": "{model}/coco_test/gpsm_ap",
    "video temporal k1": "{model}/video/temporal_k1",
    "video temporal k12": "{model}/video/temporal_k12",
}


def overrides(seed: int) -> list[str]:
    return [f"{stage}.train.seed={seed}" for stage in STAGES]


def queue(seeds: list[int]) -> None:
    for seed in seeds:
        experiments.queue(f"seed-{seed}", overrides(seed))
    print(f"queued {len(seeds)} experiments; run them with: .venv/bin/python scripts/seeds.py run")


def rows(runs: dict[str, dict[str, float]]) -> list[dict]:
    """Per run and model: the figures; and per model the BodyMap - CSE gap."""
    out = []
    for name, metrics in runs.items():
        if name != "workspace" and not name.startswith("seed-"):
            continue
        for model in ("bodymap", "cse"):
            out.append(
                {"run": name, "model": model} | {c: metrics.get(k.format(model=model)) for c, k in FIGURES.items()}
            )
        gap = {}
        for column, key in FIGURES.items():
            a, b = metrics.get(key.format(model="bodymap")), metrics.get(key.format(model="cse"))
            gap[column] = None if a is None or b is None else a - b
        out.append({"run": name, "model": "bodymap - cse"} | gap)
    return out


def summary(per_run: list[dict]) -> list[dict]:
    """mean ± sd (min..max) per model over the runs, as text cells."""
    out = []
    for model in dict.fromkeys(r["model"] for r in per_run):
        mine = [r for r in per_run if r["model"] == model]
        row = {"run": f"{len(mine)} runs", "model": model}
        for column in FIGURES:
            values = [r[column] for r in mine if r[column] is not None]
            if not values:
                row[column] = "–"
                continue
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            row[column] = f"{statistics.mean(values):.1f} ± {sd:.1f} ({min(values):.1f}..{max(values):.1f})"
        out.append(row)
    return out


def table() -> None:
    import pandas as pd

    per_run = rows(experiments.experiments())
    if not per_run:
        raise SystemExit("no metrics found: run `make run`, then queue and run the seed experiments")
    frame = pd.DataFrame(per_run)
    frame.to_csv(ROOT / "seeds.csv", index=False, float_format="%.2f")
    text = markdown(pd.DataFrame(summary(per_run))) + "\n" + markdown(frame)
    (ROOT / "seeds.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("queue", "run", "table"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="extra seeds (the workspace is one)")
    args = parser.parse_args()
    {"queue": lambda: queue(args.seeds), "run": experiments.run_all, "table": table}[args.action]()


if __name__ == "__main__":
    main()
