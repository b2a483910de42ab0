"""bodymap.determinism: the CPU kernels are pinned before the libraries load, never after; BLAS-free products."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from bodymap.determinism import CPU_KERNELS, cpu_flags, ordered_matmul, pin_cpu_kernels


def test_kernels_are_pinned_in_a_fresh_process_and_the_environment_wins():
    code = (
        "import json, sys\n"
        "from bodymap.determinism import pin_cpu_kernels\n"
        "pinned = pin_cpu_kernels()\n"
        "import torch\n"
        "print(json.dumps([pinned, torch.backends.cpu.get_cpu_capability()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CPU_KERNELS}
    env["MKL_CBWR"] = "AUTO"  # set by the caller: kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    pinned, capability = json.loads(out.stdout.strip().splitlines()[-1])
    assert "MKL_CBWR" not in pinned and pinned["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    if {"avx2", "fma"} <= cpu_flags():
        assert pinned["ATEN_CPU_CAPABILITY"] == "avx2" and capability == "AVX2"


def test_opencv_knows_the_feature_it_is_told_to_disable():
    # cv2.checkHardwareSupport(256) is CV_CPU_AVX512_SKX, the dispatch target the pinned name turns off.
    code = "import cv2\nprint(cv2.checkHardwareSupport(256))\n"
    env = {**os.environ, "OPENCV_CPU_DISABLE": CPU_KERNELS["OPENCV_CPU_DISABLE"]}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "unknown CPU feature" not in out.stderr, out.stderr[-2000:]
    assert out.stdout.strip() == "False"  # off whether or not the CPU has it


def test_nothing_is_pinned_once_numpy_is_loaded(monkeypatch):
    # Here numpy and torch are loaded: their kernels are chosen, and workers must compute like this process.
    for name in CPU_KERNELS:
        monkeypatch.delenv(name, raising=False)
    assert pin_cpu_kernels() == {}
    assert not set(CPU_KERNELS) & set(os.environ)


def test_ordered_matmul_is_the_matrix_product():
    rng = np.random.default_rng(0)
    points, matrix = rng.normal(size=(1000, 3)), rng.normal(size=(3, 3))
    np.testing.assert_allclose(ordered_matmul(points, matrix), points @ matrix, rtol=1e-12, atol=1e-12)
    single = ordered_matmul(points.astype(np.float32), matrix.astype(np.float32))
    assert single.dtype == np.float32
    expected = (points[:, :1] * matrix[0] + points[:, 1:2] * matrix[1]) + points[:, 2:] * matrix[2]
    assert ordered_matmul(points, matrix).tobytes() == expected.tobytes()
