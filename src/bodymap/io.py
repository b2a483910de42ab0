"""Atomic file and directory writes, and the run record every stage leaves next to its outputs.

Nothing half-written is left behind: files are written to a temporary name in the same directory and renamed
into place; whole output directories are built under a temporary name and renamed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bodymap import __version__
from bodymap.errors import BodymapError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's) data and metadata to the disk (`fsync`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds, delete it otherwise.

    durable: fsync the file before the rename and the directory after it, so a power loss or a node going away
    right after leaves either the old file or the whole new one, never a renamed but empty one (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        if durable:
            fsync_path(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            fsync_path(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Write JSON atomically (numpy scalars and arrays are converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent, default=_json_default, sort_keys=False) + "\n")


def write_yaml(path: str | Path, data: Any) -> None:
    """Write YAML atomically, keys in insertion order."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


def save_npz(path: str | Path, compressed: bool = True, **arrays: np.ndarray) -> None:
    """Save arrays to an .npz atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save one array to an .npy atomically (loadable with mmap_mode)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_image(path: str | Path, rgb: np.ndarray, jpeg_quality: int | None = None) -> None:
    """Write an RGB (or single-channel) uint8 image atomically; PNG, or JPEG when `jpeg_quality` is given."""
    import cv2

    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    if jpeg_quality is None:
        ok, buf = cv2.imencode(".png", image)
    else:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise OSError(f"cannot encode image for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; raise BodymapError naming the file (and `what` it holds) when unreadable or not JSON."""

    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise BodymapError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise BodymapError(f"{path}: not valid JSON ({exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; raise BodymapError naming the file when it is unreadable."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BodymapError(f"{path}: cannot read image (missing, or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_cse(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The one reader of a CSE output npz (docs/formats.md): vertex [H, W] int32 (-1 background) and score [H, W]
    float32 foreground probability."""
    try:
        with np.load(path) as data:
            return data["vertex"].astype(np.int32), data["score"].astype(np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise BodymapError(f"{path}: CSE output missing or unreadable ({exc}); run cse_init on this set") from None


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit (with a `-dirty` suffix when tracked files changed), or 'unknown' outside a repo.

    `BODYMAP_GIT_COMMIT` overrides it, for container images built without the .git directory.
    """
    if os.environ.get("BODYMAP_GIT_COMMIT"):
        return os.environ["BODYMAP_GIT_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def write_run_info(out_dir: str | Path, stage: str, params: dict[str, Any], **extra: Any) -> Path:
    """Write `<out_dir>/run.yaml`: the stage, its resolved parameters, the git commit and the bodymap version.

    No timestamp, so identical runs write identical files.
    """

    record = {"stage": stage, "git_commit": git_commit(), "bodymap_version": __version__, "params": params, **extra}
    path = Path(out_dir) / "run.yaml"
    write_yaml(path, record)
    return path
