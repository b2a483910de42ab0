"""The one place that talks to MLflow.

Every stage run is an MLflow run in one experiment. When `BODYMAP_PIPELINE_RUN_ID` is set (by `make run`, or by
the KFP pipeline), stage runs are nested under that pipeline run. The tracking URI is `MLFLOW_TRACKING_URI` when
set, else the embedded default `sqlite:///<cwd>/mlflow.db`. SQLite allows one writer at a time, so every call
retries on "database is locked" with jittered back-off instead of failing a stage.

One run per stage run: under torchrun only rank 0 (`RANK`, as torchrun sets it) opens and logs a run; on every
other rank a `Tracker` is disabled, so stage code never branches on rank around logging. `Tracker(enabled=False)`
turns every call into a no-op as well (tests that opt out).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from bodymap.io import git_commit

log = logging.getLogger(__name__)
T = TypeVar("T")

PIPELINE_RUN_ENV = "BODYMAP_PIPELINE_RUN_ID"
# MLflow draws tqdm bars for artifact transfers; stage logs are plain lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


_READY: set[str] = set()


def prepare_store(uri: str | None = None) -> str:
    """Point MLflow at the store and, for SQLite, create or migrate its schema under a file lock.

    Two processes opening a fresh SQLite store at once (parallel experiments, sharded stages) would otherwise race
    on the schema migrations ("duplicate column name"); after this, only row writes contend, which `with_retry`
    absorbs.
    """
    import mlflow

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and uri not in _READY:
        import fcntl

        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with_retry(mlflow.MlflowClient(uri).search_experiments, max_results=1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)
    return uri


def _is_locked(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return "database is locked" in text or "database table is locked" in text


def with_retry(fn: Callable[..., T], *args: Any, attempts: int = 10, **kwargs: Any) -> T:
    """Call fn, retrying with jittered exponential back-off while SQLite reports the database locked."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_locked(exc) or attempt == attempts - 1:
                raise
            delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.debug("MLflow store locked, retrying in %.2f s (%s)", delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")


def dvc_hashes(paths: list[Path], lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """`dvc.<path>` → md5 of each path that is an output recorded in dvc.lock (the data version a stage read).

    DVC writes dvc.lock as each stage finishes, so a stage sees the hashes of the outputs it depends on.
    Read as plain YAML: the library does not import DVC.
    """
    import yaml

    if not lock.exists():
        return {}
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return {}
    recorded = {o["path"]: o.get("md5") for st in stages.values() for o in st.get("outs", []) if isinstance(o, dict)}
    wanted = {str(Path(p)).rstrip("/") for p in paths}
    return {f"dvc.{p}": str(recorded[p]) for p in sorted(wanted) if recorded.get(p)}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class Tracker:
    """An MLflow run for one stage (or a no-op when disabled).

    Args:
        enabled: False turns every method into a no-op (tests that opt out). A tracker is disabled anyway off rank 0
            of a torchrun job and when `BODYMAP_TRACKING=0`.
        experiment: MLflow experiment name.
    """

    def __init__(self, enabled: bool = True, experiment: str = "bodymap") -> None:
        main_rank = int(os.environ.get("RANK", "0")) == 0
        self.enabled = enabled and main_rank and os.environ.get("BODYMAP_TRACKING", "1") != "0"
        self.experiment = experiment
        self.run_id: str | None = None
        self._mlflow: Any = None

    @property
    def mlflow(self) -> Any:
        if self._mlflow is None:
            import mlflow

            prepare_store()
            self._mlflow = mlflow
        return self._mlflow

    def start(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        inputs: list[Path] | None = None,
    ) -> None:
        """Start the run (nested under the pipeline run when one is active), log flattened params, the resolved
        config as an artifact, and tag it with the git commit and the DVC hashes of `inputs`."""
        if not self.enabled:
            return
        tags = {"stage": name, "git_commit": git_commit(), **dvc_hashes(inputs or []), **dict(tags or {})}
        mlflow = self.mlflow
        experiment = with_retry(mlflow.set_experiment, self.experiment)
        parent = os.environ.get(PIPELINE_RUN_ENV)
        run = with_retry(
            mlflow.start_run,
            run_name=name,
            experiment_id=experiment.experiment_id,
            parent_run_id=parent or None,
            tags=dict(tags or {}),
        )
        self.run_id = run.info.run_id
        if params:
            flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
            items = list(flat.items())
            for i in range(0, len(items), 100):  # MLflow's batch limit
                with_retry(mlflow.log_params, dict(items[i : i + 100]))
            with_retry(mlflow.log_dict, dict(params), f"config/{name}.yaml")
        log.info("MLflow run %s (%s) in %s", self.run_id, name, tracking_uri())

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        clean = {k.replace("/", "."): float(v) for k, v in metrics.items() if v is not None and v == v}
        with_retry(self.mlflow.log_metrics, clean, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return
        with_retry(self.mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        path = Path(path)
        if path.is_dir():
            with_retry(self.mlflow.log_artifacts, str(path), artifact_path)
        elif path.exists():
            with_retry(self.mlflow.log_artifact, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        if not self.enabled or self.run_id is None:
            return
        with_retry(self.mlflow.log_dict, dict(data), artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        if not self.enabled or self.run_id is None:
            return
        with_retry(self.mlflow.end_run, status=status)
        self.run_id = None

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        inputs: list[Path] | None = None,
    ) -> Iterator[Tracker]:
        """`with tracker.run("pretrain", params, inputs=[...]): ...` — ends FAILED when the block raises."""
        self.start(name, params, tags, inputs)
        try:
            yield self
        except BaseException:
            self.end("FAILED")
            raise
        self.end("FINISHED")


def start_pipeline_run(experiment: str = "bodymap", name: str = "pipeline") -> str:
    """Create the parent run stage runs nest under (`make run` exports its id as BODYMAP_PIPELINE_RUN_ID)."""
    import mlflow

    prepare_store()
    experiment_id = with_retry(mlflow.set_experiment, experiment).experiment_id
    client = mlflow.MlflowClient()
    run = with_retry(
        client.create_run, experiment_id, run_name=name, tags={"git_commit": git_commit(), "kind": "pipeline"}
    )
    return run.info.run_id


def end_pipeline_run(run_id: str, status: str = "FINISHED") -> None:
    import mlflow

    prepare_store()
    with_retry(mlflow.MlflowClient().set_terminated, run_id, status)
