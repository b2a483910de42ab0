"""The store contracts, for real, on loopback: a moto S3 server on 127.0.0.1 (one per module, started and stopped
here) behind bodymap.storage, a `dvc push`/`dvc pull` round trip, and an `mlflow server` with S3 artifacts.

No network: every server binds 127.0.0.1 on a free port, every subprocess has a timeout, and credentials are the
fake ones moto accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bodymap.errors import BodymapError
from bodymap.storage import ChecksumMismatchError, RetryPolicy, S3Uri, Storage, TransferSettings, make_client

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (free port), shared by this module's tests and stopped at its end."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake credentials and the loopback endpoint in the environment; no ~/.aws files, no proxies."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


class FlakyNetwork:
    """A botocore `before-send` hook: the first `n` sends of each listed operation fail as the network would."""

    def __init__(self, failures: dict[str, int], error: str = "drop") -> None:
        self.budget = dict(failures)
        self.error = error
        self.failed: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()

    def install(self, client) -> FlakyNetwork:
        client.meta.events.register("before-send.s3", self)
        return self

    def __call__(self, request, **kwargs):
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectionClosedError

        operation = request.context.get("operation_name") or kwargs["event_name"].rsplit(".", 1)[-1]
        self.sent[operation] += 1
        if self.budget.get(operation, 0) > 0:
            self.budget[operation] -= 1
            self.failed[operation] += 1
            if self.error == "drop":
                raise ConnectionClosedError(endpoint_url=request.url)
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Raw(body))
        return None


class _Raw:
    """The raw-response object AWSResponse reads its body from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *args, **kwargs):
        yield self.body


def make_checkpoint(path: Path, megabytes: int) -> Path:
    """A checkpoint-sized file: random float32 weights in an .npy."""
    rng = np.random.default_rng(0)
    np.save(path, rng.standard_normal(megabytes * MiB // 4, dtype=np.float32))
    return path


# ---------------------------------------------------------------------------------------------------- storage.py
def test_checkpoint_roundtrip_in_parts_absorbs_dropped_connections(aws_env, tmp_path):
    storage = Storage(transfer=TransferSettings(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    storage.ensure_bucket("ckpt")
    flaky = FlakyNetwork({"UploadPart": 1, "GetObject": 1}).install(storage.client)
    checkpoint = make_checkpoint(tmp_path / "step_000200.npy", 11)

    digest = storage.upload_file(checkpoint, "s3://ckpt/runs/1/pretrain/step_000200.npy")
    restored = storage.download_file("s3://ckpt/runs/1/pretrain/step_000200.npy", tmp_path / "back" / "ckpt.npy")

    assert restored.read_bytes() == checkpoint.read_bytes()
    assert flaky.failed == {"UploadPart": 1, "GetObject": 1}  # each absorbed by botocore's request retries
    assert flaky.sent["CreateMultipartUpload"] == 1 and flaky.sent["UploadPart"] == 3 + 1  # 3 parts, 1 retried
    head = storage.head("s3://ckpt/runs/1/pretrain/step_000200.npy")
    assert head["Metadata"]["sha256"] == digest
    assert head["ContentLength"] == checkpoint.stat().st_size


def test_whole_transfer_retry_when_request_retries_are_exhausted(aws_env, tmp_path):
    sleeps: list[float] = []
    client = make_client(max_attempts=1)  # no request-level retries: the transfer-level loop must absorb errors
    storage = Storage(client=client, retry=FAST_RETRY, sleep=sleeps.append, seed=0)
    storage.ensure_bucket("flaky")
    flaky = FlakyNetwork({"PutObject": 2}, error="503").install(client)
    checkpoint = make_checkpoint(tmp_path / "small.npy", 1)

    storage.upload_file(checkpoint, "s3://flaky/small.npy")

    assert flaky.failed == {"PutObject": 2}
    assert len(sleeps) == 2 and all(0 <= s <= FAST_RETRY.max_delay_s for s in sleeps)
    FlakyNetwork({"PutObject": 3}, error="503").install(client)
    with pytest.raises(BodymapError, match=r"failed after 3 attempts: SlowDown"):
        storage.upload_file(checkpoint, "s3://flaky/small.npy")


def test_corrupted_object_is_never_handed_out(aws_env, tmp_path):
    storage = Storage(retry=FAST_RETRY, sleep=lambda s: None)
    storage.ensure_bucket("rot")
    good = make_checkpoint(tmp_path / "good.npy", 1)
    digest = storage.upload_file(good, "s3://rot/model.npy")
    corrupted = bytearray(good.read_bytes())
    corrupted[-1] ^= 0xFF  # same size, one bit-flipped byte, the original digest still attached
    storage.client.put_object(Bucket="rot", Key="model.npy", Body=bytes(corrupted), Metadata={"sha256": digest})

    destination = tmp_path / "out" / "model.npy"
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        storage.download_file("s3://rot/model.npy", destination)
    assert not destination.exists()
    assert not any(destination.parent.iterdir())  # no temporary left behind


def test_directories_and_errors_for_people(aws_env, tmp_path):
    storage = Storage(retry=FAST_RETRY, sleep=lambda s: None)
    storage.ensure_bucket("dirs")
    src = tmp_path / "render"
    (src / "images").mkdir(parents=True)
    for i in range(3):
        (src / "images" / f"{i:04d}.png").write_bytes(os.urandom(1000 + i))
    (src / "annotations.json").write_text('{"images": []}')

    keys = storage.upload_dir(src, "s3://dirs/run/render")
    assert keys == ["run/render/annotations.json"] + [f"run/render/images/{i:04d}.png" for i in range(3)]
    storage.client.put_object(Bucket="dirs", Key="run/render2/other.txt", Body=b"not under run/render/")
    out = storage.download_dir("s3://dirs/run/render", tmp_path / "copy")
    copied = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    for relative in copied:
        assert (out / relative).read_bytes() == (src / relative).read_bytes()

    with pytest.raises(BodymapError, match=r"s3://dirs/missing.npy: no such object"):
        storage.download_file("s3://dirs/missing.npy", tmp_path / "x.npy")
    with pytest.raises(BodymapError, match="no objects under this prefix"):
        storage.download_dir("s3://dirs/nothing", tmp_path / "empty")
    with pytest.raises(BodymapError, match="NoSuchBucket"):
        storage.upload_file(src / "annotations.json", "s3://no-such-bucket/a.json")
    assert storage.exists(S3Uri("dirs", "run/render/annotations.json"))


def test_publish_replaces_an_object_only_with_a_whole_verified_file(aws_env, tmp_path):
    """`publish_file` (how checkpoints reach the store): upload beside the target, verify, server-side copy over it
    (in parts: a large checkpoint), delete the staging object; a dropped connection on the copy is absorbed."""
    storage = Storage(transfer=TransferSettings(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    storage.ensure_bucket("publish")
    old = make_checkpoint(tmp_path / "old.npy", 1)
    storage.upload_file(old, "s3://publish/run/last.pt")
    flaky = FlakyNetwork({"UploadPartCopy": 1}).install(storage.client)
    new = tmp_path / "new.npy"
    new.write_bytes(os.urandom(11 * MiB))

    digest = storage.publish_file(new, "s3://publish/run/last.pt")

    assert storage.list_keys("s3://publish/run") == ["run/last.pt"]  # the staging object is gone
    assert flaky.failed == {"UploadPartCopy": 1} and flaky.sent["UploadPartCopy"] == 3 + 1  # copied in 3 parts
    head = storage.head("s3://publish/run/last.pt")
    assert head["Metadata"]["sha256"] == digest and head["ContentLength"] == 11 * MiB
    back = storage.download_file("s3://publish/run/last.pt", tmp_path / "back.pt")
    assert back.read_bytes() == new.read_bytes()
    before = sum(flaky.sent.values())
    assert storage.upload_file(new, "s3://publish/run/last.pt", skip_identical=True) == digest
    assert sum(flaky.sent.values()) == before + 1  # one HeadObject: nothing uploaded again


def test_training_killed_after_a_checkpoint_resumes_from_the_store(aws_env, tmp_path):
    """A pod's disk does not outlive it: with an s3:// --model-dir, `last.pt` is published every checkpoint_every
    steps, and a process killed after one and restarted on a fresh local directory resumes from the store and
    ends with the uninterrupted run's weights."""
    import signal

    import torch
    from toy_training import TOY_CONFIG, ToyData, toy_loss, toy_model

    from bodymap.train import load_checkpoint, train

    Storage().ensure_bucket("train")
    reference = toy_model()
    train(reference, ToyData(), toy_loss, TOY_CONFIG, tmp_path / "ref", "toy", {})
    uri = "s3://train/runs/7/model"
    script = [sys.executable, str(Path(__file__).with_name("store_kill_script.py")), uri]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BODYMAP_TRACKING": "0"}
    process = subprocess.Popen([*script, "--hang-at", "6"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        first_local = Path(process.stdout.readline().split(" ", 1)[1].strip())
        assert process.stdout.readline().strip() == "first step 1"
        assert process.stdout.readline().strip() == "hanging"  # past the step-4 checkpoint, before the next
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert Storage().list_keys(uri) == ["runs/7/model/last.pt"]  # published whole, no staging object left
    Storage().download_file(f"{uri}/last.pt", tmp_path / "stored.pt")
    assert load_checkpoint(tmp_path / "stored.pt")["step"] == 4
    shutil.rmtree(first_local)  # the pod and its disk are gone

    done = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")
    assert Path(lines[0].split(" ", 1)[1]) != first_local and lines[1:3] == ["first step 5", "done"]
    Storage().download_file(f"{uri}/last.pt", tmp_path / "final.pt")
    final = load_checkpoint(tmp_path / "final.pt")
    assert final["step"] == 12
    for (name, a), b in zip(reference.state_dict().items(), final["model"].values(), strict=True):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------------------------------- DVC remote
def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_push_pull_roundtrip_through_make_remote(aws_env, tmp_path):
    Storage().ensure_bucket("bodymap")
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
        "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"),
    }
    repo = tmp_path / "repo"
    data = repo / "data" / "render"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(data / "images" / f"{i:04d}.npy", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    (data / "annotations.json").write_text(json.dumps({"images": [{"id": i} for i in range(4)]}))
    original = {p.relative_to(repo): p.read_bytes() for p in data.rglob("*") if p.is_file()}

    dvc = str(BIN / "dvc")
    run(["git", "init", "-q"], repo, env)
    run([dvc, "init", "-q"], repo, env)
    run([dvc, "add", "-q", "data/render"], repo, env)
    make = ["make", "-s", "-C", str(repo), "-f", str(ROOT / "Makefile"), "remote", f"DVC={dvc}"]
    run([*make, "DVC_REMOTE_URL=s3://bodymap/dvc"], repo, env)
    local_config = (repo / ".dvc" / "config.local").read_text()
    assert "endpointurl = " + aws_env["AWS_ENDPOINT_URL"] in local_config
    assert "url = s3://bodymap/dvc" in local_config
    assert "store" not in (repo / ".dvc" / "config").read_text()  # nothing environment-specific to commit
    assert "testing" not in local_config  # credentials stay in the environment

    run([dvc, "push", "-q"], repo, env)
    pushed = Storage().list_keys("s3://bodymap/dvc")
    assert len(pushed) >= len(original)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(data)
    run([dvc, "pull", "-q"], repo, env)
    restored = {p.relative_to(repo): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert restored == original


def test_make_remote_needs_an_endpoint(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    done = subprocess.run(
        ["make", "-s", "-C", str(tmp_path), "-f", str(ROOT / "Makefile"), "remote", f"DVC={BIN / 'dvc'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "set AWS_ENDPOINT_URL" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------- MLflow server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def mlflow_server(aws_env, tmp_path) -> Iterator[Server]:
    """`mlflow server` on SQLite with artifacts proxied to s3://bodymap/mlflow on the moto server; started, not
    awaited (the client waits for /health while both import), and always stopped."""
    Storage().ensure_bucket("bodymap")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": aws_env["AWS_ENDPOINT_URL"],
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job runner process: nothing here uses it
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    log = tmp_path / "mlflow-server.log"
    command = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", "s3://bodymap/mlflow",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.mark.slow
def test_mlflow_server_logs_to_s3_and_serves_the_registered_model(mlflow_server, aws_env, tmp_path):
    # The client gets no S3 credentials: the server proxies every artifact to the store.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "NO_PROXY": "127.0.0.1,localhost"})
    client = Path(__file__).with_name("s3_mlflow_client.py")
    command = [sys.executable, str(client), mlflow_server.url, "bodymap-loopback"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"client failed:\n{done.stderr[-3000:]}\nserver log:\n{mlflow_server.log_tail()}"
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["artifact_uri"].startswith("mlflow-artifacts:")
    assert result["params"] == {"lr": "0.1", "steps": "5", "hidden": "8"}
    assert len(result["loss_history"]) == 5 and result["loss_history"][-1] < result["loss_history"][0]
    assert result["artifacts"] == ["config/loopback.yaml"]
    assert result["promoted"] and result["alias_version"] == result["version"] == "1"
    assert result["max_abs_diff"] < 1e-6
    stored = Storage().list_keys("s3://bodymap/mlflow")
    assert any(key.endswith("config/loopback.yaml") for key in stored)
    assert any("MLmodel" in key for key in stored), "the logged model's files live on the store"


def test_stage_commands_read_and_write_s3_paths(aws_env, tmp_path):
    """Any command takes s3:// paths: inputs are fetched first, outputs uploaded after (what multi-node training
    pods and cluster pipeline steps do with the pipeline's artifact URIs)."""
    import sys

    import yaml

    from bodymap.storage import Storage

    sys.path.insert(0, str(Path(__file__).parent))
    from test_template import _write_custom_template

    storage = Storage()
    storage.ensure_bucket("stage")
    mesh, charts = _write_custom_template(tmp_path)
    params = tmp_path / "params.yaml"
    template = {"source": "mesh", "lbo_k": 8, "mesh": {"path": str(mesh), "charts": str(charts)}}
    params.write_text(yaml.safe_dump({"template": template}))
    storage.upload_file(params, "s3://stage/config/params.yaml")

    def bodymap(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bodymap.cli", *args]
        return subprocess.run(command, env=aws_env, capture_output=True, text=True, timeout=300)

    # An s3:// input: the file is fetched before the command reads it.
    checked = bodymap("params", "check", "s3://stage/config/params.yaml")
    assert checked.returncode == 0 and "ok" in checked.stdout, checked.stderr[-2000:]
    # s3:// outputs: a directory and a file, uploaded after the stage succeeds.
    built = bodymap(
        "template", "--params", "s3://stage/config/params.yaml", "-q",
        "--out", "s3://stage/template", "--metrics", "s3://stage/metrics/template.json",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    keys = storage.list_keys("s3://stage/template")
    assert "template/template.npz" in keys and "template/geodesics.npy" in keys
    assert storage.exists("s3://stage/metrics/template.json")
    missing = bodymap("params", "check", "s3://stage/config/nothing.yaml")
    assert missing.returncode == 2 and "no objects under this prefix" in missing.stderr
