"""Files and directories to and from an S3-compatible object store (AWS S3, MinIO, Ceph, ...) by `s3://` URI.

- Credentials come only from the environment and boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
  a profile, an IAM role); nothing here accepts or stores a key.
- The endpoint comes from the `endpoint_url` argument, else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or
  MLFLOW_S3_ENDPOINT_URL (what the k8s/ Secrets set), else AWS itself.
- Retries happen at two levels. botocore retries every HTTP request ("standard" mode: 5xx, throttling, timeouts,
  dropped connections; exponential backoff with jitter). Around that, a whole transfer that still fails on a
  transient error, or whose download does not match its checksum, is retried with exponential backoff and full
  jitter (`RetryPolicy`). Missing objects, denied access and bad URIs fail at once with an error that names the URI.
- Large files go up in parts (boto3's TransferConfig: parts above `multipart_threshold`, several at a time).
- Integrity: every upload records the file's SHA-256 and every download is verified against it (and the size)
  before it replaces the destination. The digest travels as user metadata (`x-amz-meta-sha256`), which every
  S3-compatible store keeps, and it means the same for single-part and multipart objects, unlike the ETag (an MD5
  only for unencrypted single-part uploads). botocore's newer default CRC trailers (aws-chunked) are switched to
  "when required", because several S3-compatible stores reject or mishandle them. Objects written by other tools
  (no digest) are checked by size only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from bodymap.errors import BodymapError
from bodymap.io import atomic_dir, atomic_path

log = logging.getLogger("bodymap.storage")

T = TypeVar("T")
MiB = 1024 * 1024
DIGEST_KEY = "sha256"  # user-metadata key of the SHA-256 hex digest
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
TRANSIENT_CODES = {
    "InternalError",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
}


class ChecksumMismatchError(BodymapError):
    """A downloaded file's size or SHA-256 differs from what the store recorded at upload."""


@dataclass(frozen=True)
class S3Uri:
    """`s3://bucket/key`; the key may be empty (a whole bucket) or end with '/' (a prefix)."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise BodymapError(f"{uri}: expected an s3://bucket/key URI")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise BodymapError(f"{uri}: the URI names no bucket")
        return cls(bucket, key)

    def join(self, *parts: str) -> S3Uri:
        key = "/".join([self.key.rstrip("/"), *parts]) if self.key else "/".join(parts)
        return S3Uri(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class RetryPolicy:
    """Whole-transfer retries: `attempts` tries, sleeping U(0, min(max_delay_s, base_delay_s * 2**n)) after try n."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2.0**retry))


@dataclass(frozen=True)
class TransferSettings:
    """Multipart and concurrency settings (S3 needs parts of at least 5 MiB, except the last)."""

    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 64 * MiB
    max_concurrency: int = 4

    def boto(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            use_threads=self.max_concurrency > 1,
        )


def endpoint_from_env() -> str | None:
    """The store's endpoint URL from the environment, or None for AWS."""
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)


def make_client(
    endpoint_url: str | None = None,
    max_attempts: int = 5,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 60.0,
) -> Any:
    """A boto3 S3 client for `endpoint_url` (default: `endpoint_from_env()`), trying each request `max_attempts` times.

    Custom endpoints get path-style addressing (`http://host/bucket/key`), which MinIO and most S3-compatible
    stores need. The region defaults to us-east-1 when the environment names none.
    """
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or endpoint_from_env()
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # tries per request, first included
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        s3={"addressing_style": "path"} if endpoint_url else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=endpoint_url, region_name=session.region_name or "us-east-1", config=config
    )


def sha256_file(path: str | Path, chunk: int = 8 * MiB) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (boto3 wraps ClientErrors without `from`, so __context__ counts too)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _client_error(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of the first botocore ClientError in the chain."""
    for item in _chain(exc):
        response = getattr(item, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return status, str(response["Error"].get("Code", ""))
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: dropped connections, timeouts, 5xx and throttling, checksum mismatches."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError, ResponseStreamingError
    from s3transfer.exceptions import RetriesExceededError

    for item in _chain(exc):
        if isinstance(
            item,
            ChecksumMismatchError
            | BotoConnectionError
            | HTTPClientError
            | IncompleteReadError
            | ResponseStreamingError
            | RetriesExceededError,
        ):
            return True
    error = _client_error(exc)
    if error is not None:
        status, code = error
        return status >= 500 or status == 429 or code in TRANSIENT_CODES
    return False


def _describe(exc: BaseException) -> str:
    """One line for people, with a hint for the usual causes."""
    from botocore.exceptions import NoCredentialsError

    if any(isinstance(e, NoCredentialsError) for e in _chain(exc)):
        return "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile / IAM role)"
    error = _client_error(exc)
    if error is not None:
        status, code = error
        hint = {
            403: "access denied: check the credentials and the bucket policy",
            404: "not found: check the bucket and key",
        }.get(status, "")
        return f"{code or status}" + (f" ({hint})" if hint else "")
    return f"{type(exc).__name__}: {exc}"


def _digest(head: dict[str, Any]) -> str | None:
    """The SHA-256 recorded with an object (user metadata), or None for objects written by other tools."""
    return head.get("Metadata", {}).get(DIGEST_KEY)


@dataclass
class Storage:
    """Uploads and downloads by `s3://` URI, with retries and SHA-256 verification (see the module docstring).

    Args:
        endpoint_url: the store (default: from the environment).
        client: a ready boto3 S3 client (tests); built by `make_client` when None.
        retry: whole-transfer retry policy.
        transfer: multipart settings.
        sleep: injectable for tests.
    """

    endpoint_url: str | None = None
    client: Any = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = make_client(self.endpoint_url)
        self._rng = random.Random(self.seed)

    # ------------------------------------------------------------------------------------------------ retrying
    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except ChecksumMismatchError as exc:
                if attempt == self.retry.attempts:
                    raise ChecksumMismatchError(f"{what}: failed after {attempt} attempts: {exc}") from exc
                error: Exception = exc
            except BodymapError:
                raise
            except Exception as exc:
                if not is_transient(exc) or attempt == self.retry.attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise BodymapError(f"{what}: failed{tries}: {_describe(exc)}") from exc
                error = exc
            delay = self.retry.delay(attempt - 1, self._rng)
            reason = error if isinstance(error, BodymapError) else _describe(error)
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s", what, attempt, self.retry.attempts, reason, delay
            )
            self.sleep(delay)
        raise AssertionError("unreachable")

    # -------------------------------------------------------------------------------------------------- objects
    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists (and is ours)."""

        def create() -> None:
            try:
                self.client.head_bucket(Bucket=bucket)
            except Exception as exc:
                if (_client_error(exc) or (0, ""))[0] != 404:
                    raise
                self.client.create_bucket(Bucket=bucket)
                log.info("created bucket %s", bucket)

        self._retrying(f"s3://{bucket}", create)

    def head(self, uri: str | S3Uri) -> dict[str, Any] | None:
        """The object's metadata (size, user metadata), or None when it does not exist."""
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)

        def head() -> dict[str, Any] | None:
            try:
                return self.client.head_object(Bucket=target.bucket, Key=target.key)
            except Exception as exc:
                if (_client_error(exc) or (0, ""))[0] == 404:
                    return None
                raise

        return self._retrying(str(target), head)

    def exists(self, uri: str | S3Uri) -> bool:
        return self.head(uri) is not None

    def upload_file(self, path: str | Path, uri: str | S3Uri, skip_identical: bool = False) -> str:
        """Upload one file (in parts when large) with its SHA-256 as metadata; return the digest.

        skip_identical: when the store already holds an object of this size and digest there, upload nothing.
        """
        path = Path(path)
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        if not path.is_file():
            raise BodymapError(f"{path}: no such file to upload")
        if not target.key or target.key.endswith("/"):
            raise BodymapError(f"{target}: an object key is needed, not a prefix")
        digest, size = sha256_file(path), path.stat().st_size
        if skip_identical:
            stored = self.head(target)
            if stored is not None and stored["ContentLength"] == size and _digest(stored) == digest:
                log.debug("%s: already holds %s (sha256 %s), not uploaded again", target, path, digest[:12])
                return digest

        def upload() -> None:
            self.client.upload_file(
                str(path),
                target.bucket,
                target.key,
                ExtraArgs={"Metadata": {DIGEST_KEY: digest}},
                Config=self.transfer.boto(),
            )
            stored = self.client.head_object(Bucket=target.bucket, Key=target.key)
            if stored["ContentLength"] != size or stored.get("Metadata", {}).get(DIGEST_KEY) != digest:
                raise ChecksumMismatchError(f"{target}: the stored object does not match {path}")

        self._retrying(f"upload {path} -> {target}", upload)
        log.debug("uploaded %s -> %s (%d bytes, sha256 %s)", path, target, size, digest[:12])
        return digest

    def publish_file(self, path: str | Path, uri: str | S3Uri) -> str:
        """Replace the object at `uri` with `path` so that a reader only ever sees a whole, verified file.

        The file goes up beside the target (`<key>.uploading`), is verified there (size and SHA-256), and only then
        is copied over the target on the store (a server-side copy, in parts when large) and the staging object
        deleted. A writer killed mid-upload leaves the previous object in place (checkpoints every N steps).
        Returns the digest.
        """
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        staging = S3Uri(target.bucket, target.key + ".uploading")
        digest = self.upload_file(path, staging)
        size = Path(path).stat().st_size

        def copy() -> None:
            self.client.copy(
                {"Bucket": staging.bucket, "Key": staging.key},
                target.bucket,
                target.key,
                ExtraArgs={"Metadata": {DIGEST_KEY: digest}, "MetadataDirective": "REPLACE"},
                Config=self.transfer.boto(),
            )
            stored = self.client.head_object(Bucket=target.bucket, Key=target.key)
            if stored["ContentLength"] != size or _digest(stored) != digest:
                raise ChecksumMismatchError(f"{target}: the copied object does not match {staging}")

        self._retrying(f"publish {staging} -> {target}", copy)
        self.delete(staging)
        log.debug("published %s -> %s (%d bytes, sha256 %s)", path, target, size, digest[:12])
        return digest

    def delete(self, uri: str | S3Uri) -> None:
        """Delete one object (nothing happens when it does not exist)."""
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        self._retrying(f"delete {target}", lambda: self.client.delete_object(Bucket=target.bucket, Key=target.key))

    def download_file(self, uri: str | S3Uri, path: str | Path) -> Path:
        """Download one object to `path`, verified against its recorded size and SHA-256; atomic."""
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        path = Path(path)

        def download() -> None:
            try:
                meta = self.client.head_object(Bucket=target.bucket, Key=target.key)
            except Exception as exc:
                if (_client_error(exc) or (0, ""))[0] == 404:
                    raise BodymapError(f"{target}: no such object") from None
                raise
            expected = meta.get("Metadata", {}).get(DIGEST_KEY)
            with atomic_path(path) as tmp:
                self.client.download_file(target.bucket, target.key, str(tmp), Config=self.transfer.boto())
                size = tmp.stat().st_size
                if size != meta["ContentLength"]:
                    raise ChecksumMismatchError(f"{target}: got {size} bytes, the store says {meta['ContentLength']}")
                if expected is not None and sha256_file(tmp) != expected:
                    raise ChecksumMismatchError(f"{target}: SHA-256 of the download differs from the uploaded file's")

        self._retrying(f"download {target} -> {path}", download)
        return path

    def list_keys(self, uri: str | S3Uri) -> list[str]:
        """Every key under the prefix `uri` (as a directory: `s3://b/run` lists `run/...`, not `run2/...`)."""
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        prefix = target.key.rstrip("/") + "/" if target.key else ""

        def list_all() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix)
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

        return self._retrying(f"list {target}", list_all)

    # ---------------------------------------------------------------------------------------------- directories
    def upload_dir(self, path: str | Path, uri: str | S3Uri, skip_identical: bool = False) -> list[str]:
        """Upload every file under `path` to `uri/<relative path>`; return the keys, sorted.

        skip_identical: files the store already holds (same size and digest) are not uploaded again.
        """
        path = Path(path)
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        if not path.is_dir():
            raise BodymapError(f"{path}: no such directory to upload")
        keys = []
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            dest = target.join(*file.relative_to(path).parts)
            self.upload_file(file, dest, skip_identical=skip_identical)
            keys.append(dest.key)
        log.info("uploaded %d files from %s to %s", len(keys), path, target)
        return keys

    def download_dir(self, uri: str | S3Uri, path: str | Path) -> Path:
        """Download every object under the prefix `uri` into `path` (replaced as a whole, only on success)."""
        target = uri if isinstance(uri, S3Uri) else S3Uri.parse(uri)
        keys = self.list_keys(target)
        if not keys:
            raise BodymapError(f"{target}: no objects under this prefix")
        prefix = target.key.rstrip("/") + "/" if target.key else ""
        with atomic_dir(path) as tmp:
            for key in keys:
                relative = PurePosixPath(key[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                    raise BodymapError(f"s3://{target.bucket}/{key}: key escapes the destination directory")
                self.download_file(S3Uri(target.bucket, key), tmp.joinpath(*relative.parts))
        log.info("downloaded %d files from %s to %s", len(keys), target, path)
        return Path(path)


__all__ = [
    "ChecksumMismatchError",
    "RetryPolicy",
    "S3Uri",
    "Storage",
    "TransferSettings",
    "endpoint_from_env",
    "is_transient",
    "make_client",
    "sha256_file",
]
