"""Multi-node training on Kubernetes: job manifests (`manifest`) and the launcher that submits and follows them.

Imports neither kfp nor dvc; the `kubernetes` client is imported only when a real API connection is made.
"""

from bodymap.cluster.launcher import JobStatus, Launcher, TrainingJobError, job_status, launch_training
from bodymap.cluster.manifest import (
    JOB_APIS,
    PYTORCHJOB,
    TRAINJOB,
    build_manifest,
    build_pytorchjob,
    build_trainjob,
    job_name,
    secret_env,
    torchrun_command,
)

__all__ = [
    "JOB_APIS",
    "PYTORCHJOB",
    "TRAINJOB",
    "JobStatus",
    "Launcher",
    "TrainingJobError",
    "build_manifest",
    "build_pytorchjob",
    "build_trainjob",
    "job_name",
    "job_status",
    "launch_training",
    "secret_env",
    "torchrun_command",
]
