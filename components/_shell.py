"""What every bodymap component shares: the project image and the few helpers its body calls.

A lightweight component is shipped as the source of its function, so a helper it calls must travel with it:
`component` embeds these helpers (KFP's `additional_funcs`) and each keeps its imports inside. They are glue
only — artifact paths to CLI options, params sections to `--set` overrides, metrics JSON to KFP metrics — and
every computation stays in `bodymap`.
"""

import functools
from collections.abc import Callable
from pathlib import Path

from kfp import dsl

from bodymap.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"


@functools.cache
def project_image(params_file: Path = PARAMS_FILE) -> str:
    """The image every component runs in: `cluster.image` of params.yaml (built from the Dockerfile)."""
    return load_params(params_file if params_file.exists() else None).cluster.image


def params_overrides(sections: dict) -> list:
    """`--set <section>=<YAML>` for each params section given as JSON text, so a stage sees exactly these values.

    The JSON is re-dumped as one-line YAML because `--set` values are read as YAML, which takes JSON's `1e-05`
    for a string; PyYAML writes `1.0e-05` and reads back what it writes.
    """
    import json

    import yaml

    flow = {
        name: yaml.safe_dump(json.loads(text), default_flow_style=True, width=2**31) for name, text in sections.items()
    }
    return [arg for name, value in flow.items() for arg in ("--set", f"{name}={value.strip()}")]


def log_key_metrics(metrics) -> None:
    """Copy the headline numbers of the stage's metrics JSON (written at `metrics.path`) into the KFP Metrics.

    Stage figures (keys with at most one '/') are all kept; of the evaluation keys `<model>/<set>/<metric>` only the
    headline metrics (`bodymap.eval.stage.HEADLINE`, temporal consistency) are, not the per-part breakdowns, which
    stay in the JSON file of the artifact.
    """
    import json
    from pathlib import Path

    from bodymap.eval.stage import HEADLINE

    for key, value in json.loads(Path(metrics.path).read_text()).items():
        name = key.rsplit("/", 1)[-1]
        headline = key.count("/") < 2 or name in HEADLINE or name.startswith("temporal_")
        if headline and isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, value)


def run_stage(stage: str, options: dict, sections: dict, metrics=None, procs: int = 1) -> None:
    """Run `bodymap <stage>` with `options` (flag -> path) and only the given params sections.

    `--params /dev/null` starts from the schema defaults, so no params.yaml of the working directory leaks in. One
    process runs in this one; `procs` > 1 (a pod with several GPUs) runs one process per GPU under torchrun, like
    the training jobs. An option whose value is a list takes all of them (`--merge DIR DIR ...`; `[]`: a bare flag).
    """
    import subprocess

    from bodymap.cli import main
    from bodymap.cluster import torchrun_command

    argv = [stage, "--params", "/dev/null", *params_overrides(sections)]
    for flag, value in options.items():  # a list is one option with several values (e.g. --merge DIR DIR)
        argv += [flag, *(str(v) for v in (value if isinstance(value, list) else [value]))]
    code = main(argv) if procs == 1 else subprocess.run(torchrun_command(1, procs, argv), check=False).returncode
    if code:
        raise RuntimeError(f"bodymap {stage} exited with status {code} (its error is printed above)")
    if metrics is not None:
        log_key_metrics(metrics)


def run_training_stage(stage: str, options: dict, model, sections: dict, metrics, procs: int = 1) -> None:
    """`run_stage` for a stage that trains into the `model` artifact, so that its checkpoint outlives the pod.

    With the pipeline root on the S3 store (`s3://...`) the stage gets the artifact's URI as `--model-dir`: the
    loop publishes `last.pt` there every `checkpoint_every` steps and resumes from it when it starts without one.
    A KFP retry of the task runs with the same output URIs (the driver provisions them once per task), so a
    preempted pod's retry continues where the last checkpoint left off. The finished model directory is then
    fetched to `model.path`, from which KFP records the artifact. Any other pipeline root trains into
    `model.path` as before (a retry starts again).
    """
    from bodymap.storage import Storage

    on_store = model.uri.startswith("s3://")
    run_stage(stage, {**options, "--model-dir": model.uri if on_store else model.path}, sections, metrics, procs)
    if on_store:
        Storage().download_dir(model.uri, model.path)


def run_training_job(stage: str, inputs: dict, outputs: dict, sections: dict, cluster: str, metrics) -> None:
    """Run `bodymap <stage>` as a multi-node TrainJob / PyTorchJob (`bodymap.cluster`), then fetch its outputs.

    The job's pods share no disk with this pod, so they get the artifacts' object-store URIs (the pipeline root
    must be on the project's S3 store, `s3://...`); when the job has succeeded, each output is downloaded to its
    local path, from which KFP records it as this task's output.
    """
    import json

    from bodymap.cluster import launch_training
    from bodymap.config import validate_params
    from bodymap.storage import Storage

    options = [arg for flag, artifact in {**inputs, **outputs}.items() for arg in (flag, artifact.uri)]
    cluster_params = validate_params({"cluster": json.loads(cluster)}, "cluster_params").cluster
    status = launch_training(cluster_params, [stage, "--params", "/dev/null", *params_overrides(sections), *options])
    print(f"bodymap {stage} job: {status.describe()}")
    storage = Storage()
    for artifact in outputs.values():
        fetch = storage.download_file if storage.exists(artifact.uri) else storage.download_dir
        fetch(artifact.uri, artifact.path)
    log_key_metrics(metrics)


HELPERS = [params_overrides, log_key_metrics, run_stage, run_training_stage]


def component(*, extra_helpers: tuple = ()) -> Callable:
    """`@dsl.component` on the project image, with the helpers above and no run-time `pip install` (the image has
    kfp and bodymap installed)."""
    return functools.partial(
        dsl.component,
        base_image=project_image(),
        install_kfp_package=False,
        additional_funcs=[*HELPERS, *extra_helpers],
    )
