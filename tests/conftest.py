"""Shared fixtures: the real Anny template, built once per test session.

The template uses landmark geodesics (seconds) instead of the dense matrix (a minute); dense storage is tested on
small analytic meshes. Between local runs the artifact is cached under pytest's cache directory, keyed by the
template code, the library versions and the CPU kernels, so editing the template (or upgrading) rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bodymap.determinism import pin_cpu_kernels

# As `bodymap` does before numpy and torch load: the session computes with the CPU kernels the stage commands use,
# so in-process runs, their worker processes and stage subprocesses write the same bytes.
PINNED_CPU_KERNELS = pin_cpu_kernels()

from bodymap.config import Geodesics, TemplateParams  # noqa: E402
from bodymap.template import BodyTemplate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_TEMPLATE_PARAMS = TemplateParams(geodesics=Geodesics(mode="landmarks", landmarks=512), picture_size=128)

has_cuda = False
try:
    import torch

    has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass
requires_cuda = pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")


@pytest.fixture
def one_torch_thread():
    """Run small tensors on one thread: on a shared 2-core machine, two OpenMP threads that wait on each other made a
    0.3 s forward/backward take 15 s. (Gradients can depend on the thread count; these tests compare within a run.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _environment() -> bytes:
    """What besides the code decides the cached artifacts' bytes: library versions, the CPU kernels they run.

    Without it a cache built on another CPU or before an upgrade compared as "different bytes" with fresh runs
    (the exact flow moves in its last bits with the BLAS kernels)."""
    from importlib.metadata import version

    from bodymap.determinism import CPU_KERNELS

    parts = [
        f"{name}={version(name)}" for name in ("numpy", "scipy", "torch", "anny", "warp-lang", "opencv-python-headless")
    ]
    parts += [f"{name}={os.environ.get(name, '')}" for name in CPU_KERNELS]
    parts.append(f"cpu={torch.backends.cpu.get_cpu_capability()}")
    return "\n".join(parts).encode()


def _template_key() -> str:
    digest = hashlib.sha256(TEST_TEMPLATE_PARAMS.model_dump_json().encode())
    digest.update(_environment())
    for path in [*sorted((ROOT / "src/bodymap/template").glob("*.py")), ROOT / "src/bodymap/raycast.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def template_dir(request: pytest.FixtureRequest) -> Path:
    """Directory of the test template artifact (real Anny body, landmark geodesics)."""
    from bodymap.template.stage import build_template

    cache = Path(request.config.cache.mkdir("bodymap-template"))
    out = cache / _template_key()
    if not (out / "metrics.json").exists() or os.environ.get("BODYMAP_REBUILD_TEST_TEMPLATE"):
        build_template(TEST_TEMPLATE_PARAMS, out)
    return out


@pytest.fixture(scope="session")
def template(template_dir: Path) -> BodyTemplate:
    return BodyTemplate.load(template_dir)


# A tiny render in the docs/formats.md layout, shared by every test that needs rendered data (CSE, training, eval).
TEST_RENDER_PARAMS = {
    "image_size": 96,
    "identities": 8,
    "train_images": 16,
    "val_images": 4,
    "test_images": 6,
    "workers": 1,
    "contact_sheet": 4,
    "coco_like": {"train_images": 6, "val_images": 4, "test_images": 4},
    "video": {"sequences": 1, "frames": 13, "labelled_every": 4},
}


@pytest.fixture(scope="session")
def rendered(template_dir: Path, request: pytest.FixtureRequest) -> Path:
    """Root of a tiny render of the test template (96x96; 16 train, 4 val, 6 test, coco-like 6 + 4 + 4, a 13-frame
    video).

    Cached between local runs under pytest's cache, keyed by the render and template code and the environment
    (`_environment`); treat it as read-only.
    """
    from bodymap.config import RenderParams
    from bodymap.render.run import render_dataset
    from bodymap.render.settings import build_settings

    params = RenderParams.model_validate(TEST_RENDER_PARAMS)  # resolved: the key follows changed defaults too
    digest = hashlib.sha256((template_dir.name + params.model_dump_json()).encode())
    for path in [*sorted((ROOT / "src/bodymap/render").glob("*.py")), ROOT / "src/bodymap/determinism.py"]:
        digest.update(path.read_bytes())
    out = Path(request.config.cache.mkdir("bodymap-render")) / digest.hexdigest()[:16]
    if not (out / "manifest.json").exists():
        render_dataset(build_settings(params), template_dir, out)
    return out
