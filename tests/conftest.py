"""Shared fixtures: the real Anny template, built once per test session.

The template uses landmark geodesics (seconds) instead of the dense matrix (a minute); dense storage is tested on
small analytic meshes. Between local runs the artifact is cached under pytest's cache directory, keyed by the
template code, so editing the template rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bodymap.config import Geodesics, TemplateParams
from bodymap.template import BodyTemplate

ROOT = Path(__file__).resolve().parents[1]
TEST_TEMPLATE_PARAMS = TemplateParams(geodesics=Geodesics(mode="landmarks", landmarks=512), picture_size=128)

has_cuda = False
try:
    import torch

    has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass
requires_cuda = pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")


def _template_key() -> str:
    digest = hashlib.sha256(TEST_TEMPLATE_PARAMS.model_dump_json().encode())
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
