"""Shared fixtures: the real Anny template, built once per test session.

The template uses landmark geodesics (seconds) instead of the dense matrix (a minute); dense storage is tested on
small analytic meshes. Between local runs the artifact is cached under pytest's cache directory, keyed by the
template code, the library versions and the CPU kernels, so editing the template (or upgrading) rebuilds it.

`gpu`-marked tests run only where torch sees a CUDA device (skipped, not faked, elsewhere). `scripts/gpu_check.sh`
runs them on a GPU machine that has torch but not the whole project environment: there `BODYMAP_TEST_TEMPLATE` and
`BODYMAP_TEST_RENDER` name a prepared template and render (`scripts/gpu_bundle.py`) instead of building them, and
nothing imported at the top of this file needs more than torch, numpy, scipy and PyYAML.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

from bodymap.determinism import pin_cpu_kernels

# As `bodymap` does before numpy and torch load: the session computes with the CPU kernels the stage commands use,
# so in-process runs, their worker processes and stage subprocesses write the same bytes.
PINNED_CPU_KERNELS = pin_cpu_kernels()

from bodymap.template import BodyTemplate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """A script of the repository that is not a package module (`benchmarks/*.py`, `scripts/*.py`), imported by
    path, e.g. `load_script("benchmarks/learning_curve.py")`."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


has_cuda = False
try:
    import torch

    has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass
requires_cuda = pytest.mark.gpu


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every `gpu`-marked test without a CUDA device."""
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not any keyword (a "gpu" overlay test id)
            item.add_marker(skip)


def _test_template_params():
    from bodymap.config import Geodesics, TemplateParams

    return TemplateParams(geodesics=Geodesics(mode="landmarks", landmarks=512), picture_size=128)


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
    digest = hashlib.sha256(_test_template_params().model_dump_json().encode())
    digest.update(_environment())
    for path in [*sorted((ROOT / "src/bodymap/template").glob("*.py")), ROOT / "src/bodymap/raycast.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def template_dir(request: pytest.FixtureRequest) -> Path:
    """Directory of the test template artifact (real Anny body, landmark geodesics); `BODYMAP_TEST_TEMPLATE` names a
    prepared one instead."""
    if os.environ.get("BODYMAP_TEST_TEMPLATE"):
        return Path(os.environ["BODYMAP_TEST_TEMPLATE"])
    from bodymap.template.stage import build_template

    cache = Path(request.config.cache.mkdir("bodymap-template"))
    out = cache / _template_key()
    if not (out / "metrics.json").exists() or os.environ.get("BODYMAP_REBUILD_TEST_TEMPLATE"):
        build_template(_test_template_params(), out)
    return out


@pytest.fixture(scope="session")
def template(template_dir: Path) -> BodyTemplate:
    return BodyTemplate.load(template_dir)


# A tiny render in the docs/formats.md layout, shared by every test that needs rendered data (CSE, training, eval).
TEST_RENDER_PARAMS = {
    "image_size": 96,
    "identities": 8,
    "train_images": 16,
    "cse_train_images": 8,
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
    (`_environment`); treat it as read-only. `BODYMAP_TEST_RENDER` names a prepared render (with at least a `train`
    split) instead.
    """
    if os.environ.get("BODYMAP_TEST_RENDER"):
        return Path(os.environ["BODYMAP_TEST_RENDER"])
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


@pytest.fixture(scope="session")
def cse_train(rendered: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CSE outputs in their format (docs/formats.md) for the train split of `rendered`: the GT correspondences as a
    perfect CSE estimate, the second input of the two-stream BodyMap models. (Real CSE inference of an untrained
    network takes 15 s here: every pixel looks like foreground to it.)"""
    import numpy as np

    from bodymap.io import save_npz

    out = tmp_path_factory.mktemp("cse") / "train"
    for gt in sorted((rendered / "train" / "gt").glob("*.npz")):
        with np.load(gt) as data:
            vertex = data["vertex"].astype(np.int32)
        h, w = vertex.shape
        save_npz(
            out / gt.name,
            vertex=vertex,
            score=(vertex >= 0).astype(np.float16),
            embedding=np.zeros((16, -(-h // 4), -(-w // 4)), np.float16),
            stride=np.array(4),
        )
    return out
