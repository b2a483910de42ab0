"""bodymap.storage without a server: URIs, the retry policy, what counts as transient, client configuration."""

from __future__ import annotations

import random

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, ConnectionClosedError, NoCredentialsError, ReadTimeoutError

from bodymap.errors import BodymapError
from bodymap.storage import (
    ChecksumMismatchError,
    RetryPolicy,
    S3Uri,
    _describe,
    endpoint_from_env,
    is_transient,
    make_client,
)


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_uris_parse_join_and_print():
    uri = S3Uri.parse("s3://bodymap/runs/1/pretrain/")
    assert (uri.bucket, uri.key) == ("bodymap", "runs/1/pretrain/")
    assert str(uri.join("ckpt", "step_200.pt")) == "s3://bodymap/runs/1/pretrain/ckpt/step_200.pt"
    assert str(S3Uri.parse("s3://bodymap").join("a")) == "s3://bodymap/a"
    for bad in ("bodymap/runs", "s3://", "s3:///key", "gs://bucket/key"):
        with pytest.raises(BodymapError, match="s3://"):
            S3Uri.parse(bad)


def test_backoff_is_exponential_with_full_jitter_and_capped():
    policy = RetryPolicy(attempts=8, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    for retry in range(8):
        cap = min(4.0, 0.5 * 2**retry)
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > 0.8 * cap  # the whole range is used


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (client_error(503, "SlowDown"), True),
        (client_error(500, "InternalError"), True),
        (client_error(429, "TooManyRequests"), True),
        (client_error(400, "RequestTimeout"), True),
        (client_error(403, "AccessDenied"), False),
        (client_error(404, "NoSuchKey"), False),
        (ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ChecksumMismatchError("bad digest"), True),
        (NoCredentialsError(), False),
        (ValueError("a bug"), False),
    ],
)
def test_transient_errors_are_told_apart(exc, transient):
    assert is_transient(exc) is transient


def test_boto3_wrapped_upload_errors_are_classified_by_their_cause():
    try:
        try:
            raise client_error(503, "SlowDown")
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}")  # noqa: B904 - boto3 does exactly this
    except S3UploadFailedError as outer:
        assert is_transient(outer)
        assert _describe(outer) == "SlowDown"
    assert "no credentials" in _describe(NoCredentialsError())
    assert "access denied" in _describe(client_error(403, "AccessDenied"))


def test_endpoint_precedence_and_client_config(monkeypatch):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert endpoint_from_env() is None
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://mlflow-store:9000")
    assert endpoint_from_env() == "http://mlflow-store:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    assert endpoint_from_env() == "http://minio:9000"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = make_client(max_attempts=7)
    assert client.meta.endpoint_url == "http://minio:9000"
    config = client.meta.config
    assert config.s3["addressing_style"] == "path"
    assert config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
