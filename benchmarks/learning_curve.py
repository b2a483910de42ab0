"""Benchmark: accuracy against training images seen, for BodyMap and for CSE, from the default budget up.

    .venv/bin/python benchmarks/learning_curve.py [--budgets 1 2 4 8] [--models cse bodymap] [--work DIR]
        [--run DIR] [--baseline] [--tag TEXT] [--seeds 0 1 2]

Needs a finished `make run` (its template, render and CSE outputs under `--run`, default this checkout; params from
this checkout's params.yaml). For each budget b and
model, trains that stage afresh with b times its default steps (the same schedule shape: warm-up, cosine decay to
the last step), with the real stage command:

- `cse`: `bodymap cse_init` (CSE alone, scored on the val and test splits);
- `bodymap`: `bodymap pretrain` on the default run's CSE outputs (scored on val and test).

and records the test-split figures: within 10 cm, GPSm AP and the 10 px window (plus val within 10 cm). Each row
names its recipe (`recipe`: the 1x steps, CSE's training images and windows; BodyMap's names its input CSE's), so
rows measured under earlier defaults stay in the file beside today's and are drawn dashed; `--tag` appends a note to
the recipe (e.g. the machine: figures of two machines differ by several points at the same seed), so a curve
measured elsewhere is its own line, not a continuation of another machine's. With
`--baseline` the 1x rows are read from the run's own `metrics/` instead of trained again: with default params that
stage *is* the 1x run. Results go to `benchmarks/results/learning_curve.csv` (one row per run, merged into the file
as runs finish, so two invocations for different models may run side by side; a rerun skips the rows it has),
`.md` and `.png`. `--seeds` trains each budget once per seed (the stage's `train.seed`: its initialisation, batch
order and augmentation), so a step between budgets can be read against the run-to-run spread at one budget; the
plot draws the mean of a budget's seeds with their range as an error bar. Runs take b times the stage's default
time (BodyMap at 8x: about 8 x its `make run` share), so run it in the background.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGE = {"cse": "cse_init", "bodymap": "pretrain"}
FIGURES = {  # column -> metric key, {m} = the model's prefix in the stage's metrics
    "test_cm_10": "{m}/test/cm_10",
    "test_gpsm_ap": "{m}/test/gpsm_ap",
    "test_window_10px": "{m}/test/window_10px",
    "val_cm_10": "{m}/val/cm_10",
}
COLUMNS = ["model", "recipe", "budget", "seed", "steps", "images_seen", "train_seconds", *FIGURES]


def train_params(stage: str, path: Path = ROOT / "params.yaml") -> dict:
    return yaml.safe_load(path.read_text())[stage]["train"]


def default_steps(stage: str) -> tuple[int, int]:
    train = train_params(stage)
    return int(train["steps"]), int(train["batch_size"])


def recipe(model: str, path: Path = ROOT / "params.yaml") -> str:
    """What the 1x run of `model` is, beyond its step count: the CSE's data and windows (BodyMap's input too), so
    rows of two recipes are kept and drawn apart instead of read as one curve."""
    params = yaml.safe_load(path.read_text())
    render, cse = params["render"], params["cse_init"]
    crop = f"{cse['train_crop']}-px windows" if cse.get("train_crop") else "whole images"
    images = render.get("cse_train_images") or render["train_images"]
    cse_recipe = f"CSE {cse['train']['steps']} steps on {images} images, {crop}"
    return cse_recipe if model == "cse" else f"BodyMap {params['pretrain']['train']['steps']} steps on {cse_recipe}"


def default_seed(stage: str) -> int:
    return int(train_params(stage).get("seed", 0))


def key(row: dict) -> tuple[str, str, float, int]:
    # a row from before seeds were recorded was trained at the default seed, which has always been 0
    return row["model"], row["recipe"], float(row["budget"]), int(row.get("seed") or 0)


def tagged(name: str, tag: str | None) -> str:
    return f"{name} [{tag}]" if tag else name


def row_from(
    model: str, budget: float, steps: int, batch: int, values: dict, seconds: float, tag: str | None = None, seed=None
) -> dict:
    prefix = "cse" if model == "cse" else "bodymap"
    seed = default_seed(STAGE[model]) if seed is None else seed
    row = {"model": model, "recipe": tagged(recipe(model), tag), "budget": budget, "seed": seed, "steps": steps}
    row["images_seen"] = steps * batch
    row["train_seconds"] = round(values.get("train_seconds", seconds), 1)
    return row | {c: values.get(k.format(m=prefix)) for c, k in FIGURES.items()}


def baseline(model: str, data: Path, tag: str | None = None) -> dict:
    """The 1x row from the run's own stage metrics (`metrics/<stage>.json` beside its `data/`)."""
    stage = STAGE[model]
    path = data.parent / "metrics" / f"{stage}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no stage metrics for the 1x {model} row (run `make run`, or drop --baseline)")
    params = data.parent / "params.yaml"
    if params.is_file():  # the run's 1x must be this checkout's 1x, or the curve mixes two recipes
        theirs, ours = train_params(stage, params), train_params(stage)
        for name in sorted(set(theirs) | set(ours)):
            if theirs.get(name) != ours.get(name):
                raise SystemExit(
                    f"{params}: {stage}.train.{name} is {theirs.get(name)!r}, this checkout's params.yaml has "
                    f"{ours.get(name)!r}; the run's metrics are not this recipe's 1x (drop --baseline)"
                )
        if recipe(model, params) != recipe(model):
            raise SystemExit(
                f"{params}: the run's recipe is {recipe(model, params)!r}, this checkout's is {recipe(model)!r}; "
                "the run's metrics are not this recipe's 1x (drop --baseline)"
            )
    steps, batch = default_steps(stage)
    return row_from(model, 1.0, steps, batch, json.loads(path.read_text()), float("nan"), tag)


def run(model: str, budget: float, work: Path, data: Path, tag: str | None = None, seed: int | None = None) -> dict:
    stage = STAGE[model]
    steps, batch = default_steps(stage)
    steps = round(steps * budget)
    seed = default_seed(stage) if seed is None else seed
    out = work / (f"{model}-{budget:g}x" + ("" if seed == default_seed(stage) else f"-seed{seed}"))
    metrics = out / "metrics.json"
    common = ["--template", str(data / "template"), "--render", str(data / "render")]
    if model == "cse":
        args = [stage, *common, "--model-dir", str(out / "model"), "--out", str(out / "cse")]
    else:
        args = [stage, *common, "--cse", str(data / "cse"), "--model-dir", str(out / "model")]
        args += ["--out", str(out / "evaluation")]
    args += ["--metrics", str(metrics), "--set", f"{stage}.train.steps={steps}"]
    args += ["--set", f"{stage}.train.checkpoint_every={max(steps // 8, 1)}", "--set", f"{stage}.train.seed={seed}"]
    env = {**os.environ, "BODYMAP_TRACKING": "0"}
    start = time.monotonic()
    print(f"{model} {budget:g}x, seed {seed}: {steps} steps", flush=True)
    subprocess.run([sys.executable, "-m", "bodymap.cli", *args, "-q"], cwd=ROOT, env=env, check=True)
    seconds = time.monotonic() - start
    return row_from(model, budget, steps, batch, json.loads(metrics.read_text()), seconds, tag, seed)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def add_row(path: Path, row: dict) -> list[dict]:
    """Merge `row` into the CSV as it is on disk now (another invocation may have added rows), atomically."""
    rows = [r for r in read_rows(path) if key(r) != key(row)]
    rows = sorted([*rows, row], key=key)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return rows


def write_outputs(rows: list[dict]) -> None:
    def cell(column: str, v) -> str:
        if v in (None, ""):
            return "–"
        if column in ("model", "recipe", "seed", "steps", "images_seen"):
            return str(v)
        return f"{float(v):g}" if column == "budget" else f"{float(v):.1f}"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(cell(c, row[c]) for c in COLUMNS) + " |")
    (RESULTS / "learning_curve.md").write_text("\n".join(lines) + "\n")

    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(12, 4.6), dpi=100)
    axes = fig.subplots(1, 3)
    today = {model: recipe(model) for model in STAGE}  # read once, not per panel
    # (model, recipe) itself breaks the ties: a set's order of strings changes from process to process (hash
    # randomisation), and with it which colour each earlier recipe got
    lines = sorted({(r["model"], r["recipe"]) for r in rows}, key=lambda m: (m[0] != "cse", m[1] != today[m[0]], m))
    seeded = False
    for ax, (column, title) in zip(
        axes,
        [("test_cm_10", "within 10 cm (%)"), ("test_gpsm_ap", "GPSm AP"), ("test_window_10px", "10 px window (%)")],
        strict=True,
    ):
        for i, (model, name) in enumerate(lines):
            seeds = {}  # images seen -> that budget's figures, one per seed
            for r in rows:
                if (r["model"], r["recipe"]) == (model, name) and r[column] not in (None, ""):
                    seeds.setdefault(float(r["images_seen"]), []).append(float(r[column]))
            if seeds:
                now = name == today[model] or name.startswith(today[model] + " [")
                style, label, alpha = ("o-", "today", 1.0) if now else ("o--", "earlier", 0.6)
                xs = sorted(seeds)
                means = [sum(seeds[x]) / len(seeds[x]) for x in xs]
                spread = [
                    [m - min(seeds[x]) for x, m in zip(xs, means, strict=True)],
                    [max(seeds[x]) - m for x, m in zip(xs, means, strict=True)],
                ]
                seeded |= any(len(v) > 1 for v in seeds.values())
                label = f"{name} ({label})"
                ax.errorbar(xs, means, yerr=spread, fmt=style, color=f"C{i}", label=label, alpha=alpha, capsize=3)
        base = [r for r in rows if key(r)[:3] == ("cse", today["cse"], 1.0) and r[column] not in (None, "")]
        if base:  # BodyMap's images come on top of the 1x CSE's: its points are read against that line
            ax.axhline(
                sum(float(r[column]) for r in base) / len(base),
                color="gray",
                linestyle=":",
                label="cse 1x (today's bodymap input)",
            )
        ax.set_xscale("log", base=2)  # budgets double: one tick per doubling of images seen
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1024:g}k"))  # 16k, not 16384
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training images seen")
        ax.set_title(f"test split: {title}")
        ax.grid(alpha=0.3)
    # one legend under the panels: inside them it hid the curves, and the recipes need their full names. Every
    # panel's lines, not the first panel's: a row may lack one panel's figure, so a recipe may be drawn in some only.
    legend = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    order = sorted(legend, key=lambda label: label.startswith("cse 1x"))  # the reference line last, as it is read
    fig.legend(
        [legend[k] for k in order],
        order,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.035),
        ncol=2,
        fontsize="small",
        frameon=False,
    )
    if seeded:  # the legend's labels are long enough already: one note for the whole figure
        fig.text(
            0.5,
            0.005,
            "where a budget was trained with several seeds: their mean, and their range as the bar",
            ha="center",
            va="bottom",
            fontsize="small",
            style="italic",
        )
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.32, top=0.93, wspace=0.25)
    fig.savefig(RESULTS / "learning_curve.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="+", choices=sorted(STAGE), default=["cse", "bodymap"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bodymap-learning-curve"))
    parser.add_argument("--run", type=Path, default=ROOT, help="checkout of a finished `make run` (its data/)")
    parser.add_argument("--baseline", action="store_true", help="1x rows from the run's metrics/, not retrained")
    parser.add_argument("--tag", help="note appended to the recipe, e.g. the machine the curve was measured on")
    parser.add_argument("--seeds", type=int, nargs="+", help="the stage's train.seed, one run each (default: params')")
    args = parser.parse_args()
    data = args.run / "data"
    if not (data / "cse").is_dir():
        raise SystemExit(f"no {data / 'cse'}: run `make run` first (the curve reuses its template, render and CSE)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "learning_curve.csv"
    for model in args.models:
        seeds = args.seeds or [default_seed(STAGE[model])]
        for budget in args.budgets:
            for seed in seeds:
                if (model, tagged(recipe(model), args.tag), float(budget), seed) in {key(r) for r in read_rows(path)}:
                    continue
                if args.baseline and budget == 1 and seed == default_seed(STAGE[model]):
                    fresh = baseline(model, data, args.tag)
                else:
                    fresh = run(model, budget, args.work, data, args.tag, seed)
                write_outputs(add_row(path, fresh))
    rows = read_rows(path)
    write_outputs(rows)
    print((RESULTS / "learning_curve.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
