"""The Dockerfile, checked statically (there is no Docker engine here): hadolint-style rules in Python."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

from bodymap.cluster.manifest import USER_ID
from bodymap.config import load_params

ROOT = Path(__file__).resolve().parents[1]
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, args = current.strip().partition(" ")
        logical.append((keyword.upper(), args.strip()))
        current = ""
    return logical


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_base_image_is_a_pinned_cuda_runtime(dockerfile):
    bases = [args.split()[0] for keyword, args in dockerfile if keyword == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        name, _, tag = base.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"{base}: pin a tag"
        assert re.fullmatch(r"[\w.-]+", tag)
    assert re.match(r"(nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu|pytorch/pytorch:.*cuda.*runtime)", bases[-1])


def test_runs_as_the_non_root_uid_the_cluster_expects(dockerfile):
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(USER_ID) or f"--uid {USER_ID}" in " ".join(a for k, a in dockerfile if k == "RUN")
    last_user = max(i for i, (k, _) in enumerate(dockerfile) if k == "USER")
    assert all(k != "USER" for k, _ in dockerfile[last_user + 1 :])


def test_no_remote_add_and_no_secrets(dockerfile):
    for keyword, args in dockerfile:
        if keyword == "ADD":
            assert not re.search(r"\b(https?|ftp|git)://", args), f"ADD {args}: fetch in a RUN with a checksum"
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args)
            assert not [n for n in names if SECRET_NAME.search(n)], f"{keyword} {args}: no secrets in the image"
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"--mount=type=secret|AKIA[0-9A-Z]{16}", text)


def test_installs_the_project_with_its_locked_dependencies(dockerfile):
    copies = " ".join(args for keyword, args in dockerfile if keyword == "COPY")
    assert "requirements.lock" in copies and "pyproject.toml" in copies and "src" in copies
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert any("-c requirements.lock" in cmd and ".[pipeline]" in cmd for cmd in installs), installs
    assert all("--no-cache-dir" in cmd for cmd in installs), "pip install --no-cache-dir (DL3042)"
    assert not any("packages_to_install" in run for run in runs)
    for run in runs:
        if "apt-get install" in run:
            assert "--no-install-recommends" in run, "DL3015"
            assert "rm -rf /var/lib/apt/lists" in run, "DL3009"
    env = " ".join(args for keyword, args in dockerfile if keyword == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env, "components call `python3`: the venv's must come first"


def test_entrypoint_is_bodymap(dockerfile):
    entrypoints = [args for keyword, args in dockerfile if keyword == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["bodymap"]


def test_image_tag_in_params_is_pinned():
    image = load_params(ROOT / "params.yaml").cluster.image
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern also covers what lies below it."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_the_context_small_and_clean():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (
        ".venv",
        ".git",
        "data/render/x.png",
        "models",
        "mlflow.db",
        "mlruns",
        ".pytest_cache",
        ".ruff_cache",
        "src/bodymap/__pycache__/cli.cpython-311.pyc",
        ".dvc/cache",
        "metrics",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "requirements.lock", "README.md", "src/bodymap/cli.py"):
        assert not ignored(path, patterns), f"{path} is needed in the image"
    copied = [
        shlex.split(args)[:-1] for keyword, args in instructions((ROOT / "Dockerfile").read_text()) if keyword == "COPY"
    ]
    for sources in copied:
        for source in sources:
            assert not ignored(source, patterns), f"COPY {source} but .dockerignore drops it"
