"""A small training run that logs to an MLflow server through `bodymap.tracking`, registers its model, promotes it
with the registry gate (`bodymap.registry.promote`) and loads it back by alias (run as a subprocess).

Usage: python s3_mlflow_client.py TRACKING_URI MODEL_NAME. Waits for the server, then prints one JSON line.
It runs in its own process because MLflow's tracking URI is process-global state, like a real training job's.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import mlflow
import numpy as np
import torch


def wait_for_server(tracking_uri: str, timeout_s: float = 120.0) -> None:
    """The test starts this script while the server boots (both import for seconds); wait for it, bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{tracking_uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"no MLflow server at {tracking_uri} after {timeout_s} s") from None
            time.sleep(0.5)


def main(tracking_uri: str, model_name: str) -> None:
    wait_for_server(tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from bodymap.registry.promote import promote_version
    from bodymap.tracking import Tracker

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = Tracker(experiment="bodymap-loopback")
    with tracker.run("loopback", params={"lr": 0.1, "steps": 5, "hidden": 8}):
        for step in range(5):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tracker.log_metrics({"loss": loss.item()}, step=step)
        model.eval()
        example = x[:3].numpy()
        # MLflow 3 saves PyTorch models with torch.export ("pt2"), which traces forward() on the input example.
        info = mlflow.pytorch.log_model(
            model, name="model", input_example=example, registered_model_name=model_name, pip_requirements=["torch"]
        )
        run_id = tracker.run_id
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    gate = {"primary": "score", "margin": 0.0, "guards": {}}
    decision = promote_version(client, model_name, version, {"score": 1.0}, gate)
    loaded = mlflow.pytorch.load_model(f"models:/{model_name}@champion")
    with torch.no_grad():
        expected = model(torch.from_numpy(example)).numpy()
        got = loaded(torch.from_numpy(example)).numpy()
    finished = client.get_run(run_id)
    print(
        json.dumps(
            {
                "run_id": run_id,
                "artifact_uri": finished.info.artifact_uri,
                "params": finished.data.params,
                "loss_history": [m.value for m in client.get_metric_history(run_id, "loss")],
                "artifacts": sorted(a.path for a in client.list_artifacts(run_id, "config")),
                "version": version,
                "promoted": decision.promote,
                "alias_version": client.get_model_version_by_alias(model_name, "champion").version,
                "max_abs_diff": float(np.abs(expected - got).max()),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
