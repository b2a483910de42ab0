"""What `ablations.py` and `seeds.py` share: queueing DVC experiments, reading their metrics, Markdown tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def env() -> dict[str, str]:
    """One tracking store for every experiment workspace, and the venv's `bodymap` on PATH for the stage commands."""
    out = dict(os.environ)
    out.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


def queue(name: str, overrides: list[str]) -> None:
    """`dvc exp run --queue --name NAME --set-param ...` for one experiment."""
    cmd = [DVC, "exp", "run", "--queue", "--name", name]
    for override in overrides:
        cmd += ["--set-param", override]
    print(" ".join(cmd[1:]))
    subprocess.run(cmd, cwd=ROOT, check=True, env=env())


def run_all() -> None:
    """`dvc exp run --run-all --jobs 1` with the venv on PATH: the queue's worker starts `dvc` and the stage
    commands (`bodymap ...`) by name, so a plain `.venv/bin/dvc exp run --run-all` fails outside an activated venv."""
    subprocess.run([DVC, "exp", "run", "--run-all", "--jobs", "1"], cwd=ROOT, check=True, env=env())


def _metrics(entry: dict) -> dict[str, float]:
    """Flatten the metrics of one `dvc exp show --json` entry."""
    data = entry.get("data") or {}
    out: dict[str, float] = {}
    for file in (data.get("metrics") or {}).values():
        out.update({k: v for k, v in (file.get("data") or {}).items() if isinstance(v, int | float)})
    return out


def experiments() -> dict[str, dict[str, float]]:
    """Experiment name ('workspace' for the current run) -> its flat metrics, from `dvc exp show --json`; runs that
    failed, and queued or running ones (listed with the workspace's metrics and no timestamp), are left out."""
    result = subprocess.run([DVC, "exp", "show", "--json"], cwd=ROOT, check=True, capture_output=True, text=True)
    out: dict[str, dict[str, float]] = {}
    for baseline in json.loads(result.stdout):
        candidates = [("workspace", baseline)] if baseline.get("rev") == "workspace" else []
        for group in baseline.get("experiments") or []:
            for revision in group.get("revs") or []:
                candidates.append((revision.get("name") or group.get("name"), revision))
        for name, entry in candidates:
            if entry.get("error"):  # a failed or killed run shows its baseline's metrics: not a sample
                continue
            if name != "workspace" and not (entry.get("data") or {}).get("timestamp"):  # queued or still running
                continue
            metrics = _metrics(entry)
            if metrics:
                out[name] = metrics
    return out


def markdown(frame) -> str:
    """A pandas frame as a Markdown table (numbers with one decimal, '–' for missing)."""
    cells = [
        [f"{v:.1f}" if isinstance(v, float) and v == v else ("–" if v is None or v != v else str(v)) for v in row]
        for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"
