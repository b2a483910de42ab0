"""Submit a training job to Kubernetes, follow it to the end, and fail loudly when it fails or times out.

The launcher talks to the API through two small objects with the methods of the official client's
`CustomObjectsApi` (create/get/delete_namespaced_custom_object) and, optionally, `CoreV1Api`
(list_namespaced_pod, read_namespaced_pod_log). `kubernetes_apis()` builds the real ones (lazily importing the
`kubernetes` package); tests pass recording fakes. Progress is polled, not watched: a poll survives API-server
restarts and expired watch tokens, and a job's life is counted in minutes, so a 15 s period costs nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bodymap.cluster.manifest import JobApi, build_manifest, job_api, job_name
from bodymap.config import ClusterParams
from bodymap.errors import BodymapError

log = logging.getLogger("bodymap.cluster")

SUCCEEDED = ("Complete", "Succeeded")  # TrainJob, PyTorchJob
FAILED = ("Failed",)
# Pod waiting reasons that never resolve by themselves: fail now instead of at the timeout.
FATAL_WAITING = ("CreateContainerConfigError", "InvalidImageName", "CreateContainerError")
MAX_API_ERRORS = 5  # consecutive failed polls before giving up


class TrainingJobError(BodymapError):
    """The training job could not be submitted, failed, or did not finish in time."""


class CustomObjectsApi(Protocol):
    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any
    ) -> Any: ...
    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any: ...
    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any: ...


@dataclass(frozen=True)
class JobStatus:
    """Where a job is: `phase` is its latest true condition (or "Pending" before the operator reports one)."""

    phase: str
    reason: str = ""
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.phase in SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.phase in FAILED

    def describe(self) -> str:
        detail = ": ".join(p for p in (self.reason, self.message) if p)
        return f"{self.phase} ({detail})" if detail else self.phase


def job_status(obj: dict[str, Any]) -> JobStatus:
    """The status of a TrainJob or PyTorchJob object as returned by the API.

    Both kinds report `status.conditions`; a terminal condition (success or failure) wins over the others, then the
    most recent true one (by lastTransitionTime, then list order).
    """
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]
    if not conditions:
        return JobStatus("Pending")
    terminal = [c for c in conditions if c.get("type") in SUCCEEDED + FAILED]
    pool = terminal or conditions
    latest = max(enumerate(pool), key=lambda ic: (str(ic[1].get("lastTransitionTime") or ""), ic[0]))[1]
    return JobStatus(str(latest.get("type")), str(latest.get("reason") or ""), str(latest.get("message") or ""))


def _api_error(exc: Exception) -> int | None:
    """The HTTP status of a kubernetes ApiException (or anything shaped like one), else None."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


class Launcher:
    """Submits one job and follows it; every wait is bounded.

    Args:
        api: a `CustomObjectsApi` (or a fake with the same three methods).
        core_api: optional `CoreV1Api` for pod diagnostics (waiting reasons, the failed pod's last log lines).
        clock, sleep: injectable for tests.
    """

    def __init__(
        self,
        api: CustomObjectsApi,
        core_api: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.core_api = core_api
        self.clock = clock
        self.sleep = sleep

    # ------------------------------------------------------------------------------------------------ API calls
    def submit(self, manifest: dict[str, Any], api_timeout_s: float = 30.0) -> None:
        kind, name, namespace = manifest["kind"], manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        target = job_api(manifest)
        try:
            self.api.create_namespaced_custom_object(
                target.group, target.version, namespace, target.plural, manifest, _request_timeout=api_timeout_s
            )
        except Exception as exc:
            status = _api_error(exc)
            hint = {
                403: f"the pod's service account may not create {target.plural} (see k8s/base/rbac)",
                404: f"is the {kind} CRD ({target.api_version}) installed in the cluster?",
                409: "a job with this name already exists",
                422: "the API server rejected the manifest",
            }.get(status or 0, "")
            detail = getattr(exc, "reason", None) or exc
            raise TrainingJobError(
                f"{kind} {namespace}/{name}: submission failed ({detail})" + (f"; {hint}" if hint else "")
            ) from exc
        log.info("%s %s/%s submitted", kind, namespace, name)

    def delete(self, manifest: dict[str, Any], api_timeout_s: float = 30.0) -> None:
        """Delete the job and its pods (frees the GPUs); errors are logged, not raised."""
        target = job_api(manifest)
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        try:
            self.api.delete_namespaced_custom_object(
                target.group,
                target.version,
                namespace,
                target.plural,
                name,
                propagation_policy="Background",
                _request_timeout=api_timeout_s,
            )
            log.info("%s %s/%s deleted", target.kind, namespace, name)
        except Exception as exc:
            log.warning("could not delete %s %s/%s: %s", target.kind, namespace, name, exc)

    def _pods(self, target: JobApi, namespace: str, name: str, api_timeout_s: float) -> list[Any]:
        if self.core_api is None:
            return []
        try:
            pods = self.core_api.list_namespaced_pod(
                namespace, label_selector=f"{target.pod_label}={name}", _request_timeout=api_timeout_s
            )
        except Exception as exc:
            log.debug("cannot list pods of %s: %s", name, exc)
            return []
        return list(getattr(pods, "items", None) or [])

    @staticmethod
    def _waiting_reasons(pods: list[Any]) -> dict[str, str]:
        """{pod name: "Reason: message"} for containers stuck waiting."""
        reasons = {}
        for pod in pods:
            for cs in getattr(pod.status, "container_statuses", None) or []:
                waiting = getattr(cs.state, "waiting", None) if cs.state is not None else None
                if waiting is not None and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
                    reasons[pod.metadata.name] = f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        return reasons

    def _log_tail(self, pods: list[Any], namespace: str, lines: int, api_timeout_s: float) -> str:
        """The last lines of the first failed pod's log (or of the first pod), for the error message."""
        if not pods:
            return ""
        pod = next((p for p in pods if getattr(p.status, "phase", "") == "Failed"), pods[0])
        try:
            text = self.core_api.read_namespaced_pod_log(
                pod.metadata.name, namespace, tail_lines=lines, _request_timeout=api_timeout_s
            )
        except Exception as exc:
            return f"(no log from pod {pod.metadata.name}: {exc})"
        return f"last {lines} log lines of pod {pod.metadata.name}:\n{text}"

    # ----------------------------------------------------------------------------------------------- following
    def wait(
        self,
        manifest: dict[str, Any],
        timeout_s: float,
        poll_interval_s: float = 15.0,
        api_timeout_s: float = 30.0,
        delete_on_timeout: bool = True,
    ) -> JobStatus:
        """Poll until the job succeeds (return its status) or fails / times out (raise `TrainingJobError`).

        Every change of phase and every new pod waiting reason is logged. On timeout the job is deleted (unless
        `delete_on_timeout` is False) so it does not keep GPUs busy after the pipeline step has failed.
        """
        target = job_api(manifest)
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        label = f"{target.kind} {namespace}/{name}"
        start = self.clock()
        deadline = start + timeout_s
        last: JobStatus | None = None
        seen_waiting: dict[str, str] = {}
        api_errors = 0
        while True:
            try:
                obj = self.api.get_namespaced_custom_object(
                    target.group, target.version, namespace, target.plural, name, _request_timeout=api_timeout_s
                )
                api_errors = 0
            except Exception as exc:
                api_errors += 1
                if _api_error(exc) == 404:
                    raise TrainingJobError(f"{label}: the job disappeared (deleted by someone else?)") from exc
                if api_errors >= MAX_API_ERRORS:
                    raise TrainingJobError(f"{label}: {api_errors} polls in a row failed, last: {exc}") from exc
                log.warning("%s: status poll failed (%s), retrying", label, exc)
                obj = None
            elapsed = self.clock() - start
            if obj is not None:
                status = job_status(obj)
                if status != last:
                    log.info("%s: %s after %.0f s", label, status.describe(), elapsed)
                    last = status
                pods = self._pods(target, namespace, name, api_timeout_s)
                if status.succeeded:
                    return status
                if status.failed:
                    tail = self._log_tail(pods, namespace, 40, api_timeout_s)
                    raise TrainingJobError(f"{label} failed: {status.describe()}" + (f"\n{tail}" if tail else ""))
                for pod, reason in self._waiting_reasons(pods).items():
                    if seen_waiting.get(pod) != reason:
                        log.info("%s: pod %s waiting: %s", label, pod, reason)
                        seen_waiting[pod] = reason
                    if reason.split(":")[0] in FATAL_WAITING:
                        self.delete(manifest, api_timeout_s)
                        raise TrainingJobError(f"{label}: pod {pod} cannot start: {reason}")
            if self.clock() >= deadline:
                phase = last.describe() if last is not None else "unknown"
                if delete_on_timeout:
                    self.delete(manifest, api_timeout_s)
                raise TrainingJobError(f"{label}: timed out after {timeout_s:.0f} s (last status: {phase})")
            self.sleep(max(0.0, min(poll_interval_s, deadline - self.clock())))

    def run(self, manifest: dict[str, Any], cluster: ClusterParams) -> JobStatus:
        """Submit, then wait with the cluster section's timeouts.

        Ctrl-C, or SIGTERM (what a cancelled KFP run sends the step's pod), deletes the job before re-raising, so a
        cancelled pipeline does not leave GPUs busy.
        """
        self.submit(manifest, cluster.api_timeout_s)
        previous = _interrupt_on_sigterm()
        try:
            return self.wait(manifest, cluster.timeout_s, cluster.poll_interval_s, cluster.api_timeout_s)
        except KeyboardInterrupt:
            log.warning("interrupted: deleting %s %s", manifest["kind"], manifest["metadata"]["name"])
            self.delete(manifest, cluster.api_timeout_s)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupt_on_sigterm() -> Any:
    """Make SIGTERM raise KeyboardInterrupt (main thread only); return the previous handler, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def kubernetes_apis() -> tuple[Any, Any]:
    """(CustomObjectsApi, CoreV1Api) from the in-cluster service account, else from ~/.kube/config."""
    try:
        from kubernetes import client, config
    except ImportError as exc:  # the `pipeline` extra
        raise BodymapError("the Kubernetes client is missing: pip install 'bodymap[pipeline]'") from exc
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise BodymapError(f"no Kubernetes configuration (not in a pod, and no usable kubeconfig): {exc}") from exc
    return client.CustomObjectsApi(), client.CoreV1Api()


def launch_training(
    cluster: ClusterParams,
    cli_args: list[str],
    name: str | None = None,
    api: CustomObjectsApi | None = None,
    core_api: Any = None,
) -> JobStatus:
    """Run `bodymap <cli_args>` as a multi-node job (what the KFP pretrain component calls when nodes > 1).

    Args:
        cluster: the `cluster` params section (kind, nodes x GPUs, image, placement, secrets, timeouts).
        cli_args: the bodymap CLI arguments, stage first, e.g. ["pretrain", "--out", "s3://..."].
        name: the job name; `bodymap-<stage>-<random>` when None.
        api, core_api: Kubernetes API objects; `kubernetes_apis()` when `api` is None.

    Returns the final status; raises `TrainingJobError` when the job fails, cannot start or times out.
    """
    manifest = build_manifest(cluster, name or job_name(cli_args[0] if cli_args else "job"), cli_args)
    if api is None:
        api, core_api = kubernetes_apis()
    return Launcher(api, core_api).run(manifest, cluster)
