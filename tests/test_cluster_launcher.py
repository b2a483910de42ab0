"""The launcher against a fake Kubernetes API that records every call: success, failure, timeout, bad submissions."""

from __future__ import annotations

import logging
import os
import signal
from types import SimpleNamespace
from typing import Any

import pytest

from bodymap.cluster import JobStatus, Launcher, TrainingJobError, build_manifest, job_status, launch_training
from bodymap.config import ClusterParams

CLUSTER = ClusterParams(nodes=2, gpus_per_node=4, timeout_s=600, poll_interval_s=10.0)
ARGS = ["pretrain", "--out", "s3://bodymap/runs/1/pretrain"]


def cond(kind: str, time: str = "2026-01-01T00:00:00Z", reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "lastTransitionTime": time, "reason": reason, "message": message}


class ApiError(Exception):
    """Shaped like kubernetes.client.ApiException: an HTTP status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status, self.reason = status, reason


class FakeCustomObjects:
    """Records calls; `get` replays `states` (the last one repeats). An Exception in `states` is raised instead."""

    def __init__(self, states: list[Any], create_error: Exception | None = None) -> None:
        self.states = list(states)
        self.create_error = create_error
        self.calls: list[tuple[str, tuple, dict]] = []
        self.created: dict[str, Any] | None = None

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kw):
        self.calls.append(("create", (group, version, namespace, plural, body["metadata"]["name"]), kw))
        if self.create_error is not None:
            raise self.create_error
        self.created = body
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.calls.append(("get", (group, version, namespace, plural, name), kw))
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        return {**(self.created or {}), "status": {"conditions": state}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.calls.append(("delete", (group, version, namespace, plural, name), kw))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def pod(name: str, phase: str = "Running", waiting: str | None = None) -> SimpleNamespace:
    state = SimpleNamespace(waiting=SimpleNamespace(reason=waiting, message="secret not found") if waiting else None)
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name),
        status=SimpleNamespace(phase=phase, container_statuses=[SimpleNamespace(state=state)]),
    )


class FakeCore:
    def __init__(self, pods: list[SimpleNamespace], log: str = "") -> None:
        self.pods, self.log = pods, log
        self.calls: list[tuple[str, tuple, dict]] = []

    def list_namespaced_pod(self, namespace, **kw):
        self.calls.append(("list_pods", (namespace,), kw))
        return SimpleNamespace(items=self.pods)

    def read_namespaced_pod_log(self, name, namespace, **kw):
        self.calls.append(("log", (name, namespace), kw))
        return self.log


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def launcher(api, core=None) -> tuple[Launcher, FakeClock]:
    clock = FakeClock()
    return Launcher(api, core, clock=clock, sleep=clock.sleep), clock


def test_success_streams_transitions_and_returns(caplog):
    api = FakeCustomObjects(
        [
            [],
            [cond("Created")],
            [cond("Created"), cond("Running", "2026-01-01T00:01:00Z", "JobsRunning")],
            [cond("Running", "2026-01-01T00:01:00Z"), cond("Complete", "2026-01-01T00:09:00Z", "JobsCompleted")],
        ]
    )
    run, clock = launcher(api)
    manifest = build_manifest(CLUSTER, "bodymap-pretrain-ok", ARGS)
    with caplog.at_level(logging.INFO, logger="bodymap.cluster"):
        status = run.run(manifest, CLUSTER)
    assert status.succeeded and status.phase == "Complete"
    assert api.names() == ["create", "get", "get", "get", "get"]
    group, version, namespace, plural, name = api.calls[0][1]
    assert (group, version, namespace, plural, name) == (
        "trainer.kubeflow.org",
        "v1alpha1",
        "bodymap",
        "trainjobs",
        "bodymap-pretrain-ok",
    )
    assert api.created == manifest
    assert all(c[2]["_request_timeout"] == CLUSTER.api_timeout_s for c in api.calls)
    phases = [r.getMessage() for r in caplog.records if "bodymap-pretrain-ok: " in r.getMessage()]
    assert [p.split(": ", 1)[1].split(" after")[0] for p in phases] == [
        "Pending",
        "Created",
        "Running (JobsRunning)",
        "Complete (JobsCompleted)",
    ]
    assert clock.sleeps == [10.0, 10.0, 10.0]


def test_failure_raises_with_reason_and_the_failed_pods_log():
    api = FakeCustomObjects([[cond("Running")], [cond("Running"), cond("Failed", reason="BackoffLimitExceeded")]])
    core = FakeCore([pod("w-0", "Running"), pod("w-1", "Failed")], log="Traceback ...\nRuntimeError: NCCL timeout")
    run, _ = launcher(api, core)
    manifest = build_manifest(CLUSTER, "bodymap-pretrain-bad", ARGS)
    with pytest.raises(TrainingJobError) as info:
        run.run(manifest, CLUSTER)
    message = str(info.value)
    assert "TrainJob bodymap/bodymap-pretrain-bad failed: Failed (BackoffLimitExceeded)" in message
    assert "pod w-1" in message and "NCCL timeout" in message
    assert "delete" not in api.names()  # a failed job stays for `kubectl describe`; only timeouts free the GPUs
    label_selectors = {c[2]["label_selector"] for c in core.calls if c[0] == "list_pods"}
    assert label_selectors == {"jobset.sigs.k8s.io/jobset-name=bodymap-pretrain-bad"}


def test_timeout_deletes_the_job_and_raises():
    api = FakeCustomObjects([[cond("Running")]])
    run, clock = launcher(api)
    cluster = CLUSTER.model_copy(update={"timeout_s": 60, "poll_interval_s": 25.0})
    manifest = build_manifest(cluster, "bodymap-pretrain-slow", ARGS)
    with pytest.raises(TrainingJobError, match=r"timed out after 60 s \(last status: Running\)"):
        run.run(manifest, cluster)
    assert clock.now == 60.0  # the last sleep is cut to the deadline
    assert clock.sleeps == [25.0, 25.0, 10.0]
    assert api.names() == ["create", "get", "get", "get", "get", "delete"]
    assert api.calls[-1][1][-1] == "bodymap-pretrain-slow"
    assert api.calls[-1][2]["propagation_policy"] == "Background"


def test_pytorchjob_uses_its_own_api_and_conditions():
    api = FakeCustomObjects([[cond("Created"), cond("Running", "2026-01-01T00:01:00Z")], [cond("Succeeded")]])
    core = FakeCore([])
    run, _ = launcher(api, core)
    cluster = CLUSTER.model_copy(update={"launcher": "pytorchjob"})
    status = run.run(build_manifest(cluster, "bodymap-finetune-1", ["finetune"]), cluster)
    assert status.succeeded
    assert api.calls[0][1][:4] == ("kubeflow.org", "v1", "bodymap", "pytorchjobs")
    assert core.calls[0][2]["label_selector"] == "training.kubeflow.org/job-name=bodymap-finetune-1"


@pytest.mark.parametrize(
    ("status", "hint"),
    [(403, "service account may not create trainjobs"), (404, "CRD"), (409, "already exists")],
)
def test_rejected_submission_explains_itself(status, hint):
    api = FakeCustomObjects([[]], create_error=ApiError(status, "Forbidden"))
    run, _ = launcher(api)
    with pytest.raises(TrainingJobError, match=hint):
        run.run(build_manifest(CLUSTER, "bodymap-pretrain-x", ARGS), CLUSTER)
    assert api.names() == ["create"]


def test_transient_poll_errors_are_retried_but_not_forever():
    flaky = FakeCustomObjects([ApiError(500, "etcd busy"), ApiError(503, "unavailable"), [cond("Complete")]])
    run, _ = launcher(flaky)
    assert run.run(build_manifest(CLUSTER, "bodymap-pretrain-f", ARGS), CLUSTER).succeeded

    broken = FakeCustomObjects([ApiError(500, "down")])
    run, _ = launcher(broken)
    with pytest.raises(TrainingJobError, match="5 polls in a row failed"):
        run.run(build_manifest(CLUSTER, "bodymap-pretrain-g", ARGS), CLUSTER)

    gone = FakeCustomObjects([ApiError(404, "Not Found")])
    run, _ = launcher(gone)
    with pytest.raises(TrainingJobError, match="disappeared"):
        run.run(build_manifest(CLUSTER, "bodymap-pretrain-h", ARGS), CLUSTER)


def test_a_pod_that_cannot_start_fails_fast():
    api = FakeCustomObjects([[cond("Created")]])
    core = FakeCore([pod("bodymap-pretrain-s-node-0-0", "Pending", waiting="CreateContainerConfigError")])
    run, clock = launcher(api, core)
    with pytest.raises(TrainingJobError, match="cannot start: CreateContainerConfigError: secret not found"):
        run.run(build_manifest(CLUSTER, "bodymap-pretrain-s", ARGS), CLUSTER)
    assert clock.now == 0.0
    assert api.names() == ["create", "get", "delete"]


def test_launch_training_builds_submits_and_waits():
    api = FakeCustomObjects([[cond("Complete")]])
    status = launch_training(
        CLUSTER.model_copy(update={"poll_interval_s": 1.0}), ARGS, name="bodymap-pretrain-e2e", api=api
    )
    assert status == JobStatus("Complete")
    assert api.created["spec"]["trainer"]["numNodes"] == 2
    assert api.created["spec"]["trainer"]["command"][-len(ARGS) :] == ARGS


def test_job_status_prefers_terminal_then_latest_condition():
    assert job_status({}) == JobStatus("Pending")
    assert job_status({"status": {"conditions": [{"type": "Running", "status": "False"}]}}).phase == "Pending"
    late_running = [cond("Failed", "2026-01-01T00:00:00Z"), cond("Running", "2026-01-01T00:05:00Z")]
    assert job_status({"status": {"conditions": late_running}}).failed
    restarting = [cond("Running", "2026-01-01T00:00:00Z"), cond("Restarting", "2026-01-01T00:05:00Z")]
    assert job_status({"status": {"conditions": restarting}}).phase == "Restarting"


def test_sigterm_while_waiting_deletes_the_job():
    """A cancelled KFP run SIGTERMs the step's pod: the job must not outlive it."""
    api = FakeCustomObjects([[cond("Running")]])
    run, clock = launcher(api)

    def sleep_then_get_cancelled(seconds: float) -> None:
        clock.sleep(seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    run.sleep = sleep_then_get_cancelled
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run.run(build_manifest(CLUSTER, "bodymap-pretrain-c", ARGS), CLUSTER)
    assert api.names() == ["create", "get", "delete"]
    assert signal.getsignal(signal.SIGTERM) is before
