"""What keeps stage outputs byte-identical from run to run and machine to machine (docs/formats.md,
"Reproducibility").

Besides the inputs, float results of the CPU libraries depend on

- the thread count. Measured on the project's 2-core machine: one training step of resnet18 gives other weight
  gradients on 1 and 2 torch threads (oneDNN's 1x1 convolution splits its weight-gradient sum by thread), so a
  CSE model trained on 1 thread differs in every prediction file; Anny posed a batch of 4 bodies differently on
  16 threads than on 1..8; ARPACK (the LBO basis) gave other bits on 2 OpenBLAS threads than on 1. So stages
  compute on fixed counts: `train.threads` / `evaluate.threads` torch threads, one torch thread for posing, one
  OpenBLAS thread for the eigensolver. (Inference of a given model, matmuls, convolutions forward and sums came
  out the same on 1 and 2 threads.)
- the kernels the libraries pick for the CPU: ATen's vectorised kernels (AVX2 / AVX-512), oneDNN's JIT ISA, MKL's
  code path, OpenBLAS's core type, numpy's and OpenCV's SIMD builds. On the AVX2 machine, training came out
  different with ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=AVX or MKL_CBWR=COMPATIBLE, and the LBO basis
  with OPENBLAS_CORETYPE=SandyBridge; forcing the AVX2 choices changed nothing. `pin_cpu_kernels` (the CLI calls
  it first) sets `CPU_KERNELS` before the libraries initialise, so an AVX-512 machine runs AVX2 kernels. MKL is
  the exception: on AMD CPUs it honours only MKL_CBWR=COMPATIBLE, the one path shared by Intel and AMD, which
  gives other bytes than MKL's default here and costs ~1.45x on torch's CPU matmuls.

Where a product feeds an output directly (camera transforms, the render's flow, pseudo-GT corrections),
`ordered_matmul` computes it without BLAS. Each variable is only a default: set it in the environment to choose
other kernels (faster on some machines, other bytes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# Read by the libraries when they initialise (OpenBLAS: on load; ATen, oneDNN, MKL: at their first kernel call).
CPU_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels: AVX2 even on AVX-512 CPUs
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions) JIT-compiles for at most AVX2
    # MKL (torch's matmuls, small LAPACK in Anny) honours only COMPATIBLE on AMD CPUs ("AVX2" is ignored there):
    # the one code path that is the same on Intel and AMD. Matmuls ran ~1.45x slower here; convolutions are oneDNN.
    "MKL_CBWR": "COMPATIBLE",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS: the AVX2 + FMA kernels
    # numpy's own SIMD loops (exp, log, sorts, ...) and OpenCV's (augmentation, image codecs): no AVX-512 builds.
    # The names are numpy 2.4's dispatch targets and OpenCV's run-time feature name for its AVX512_SKX target
    # (hyphenated: OpenCV ignores "AVX512_SKX" with an "unknown CPU feature" line on stderr).
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
}
# Set only on CPUs with these features: forcing AVX2 kernels on a CPU without would crash, and OpenCV prints a
# warning when told to disable a feature the CPU lacks.
_NEEDS = {
    "ATEN_CPU_CAPABILITY": {"avx2", "fma"},
    "OPENBLAS_CORETYPE": {"avx2", "fma"},
    "OPENCV_CPU_DISABLE": {"avx512f"},
}
_LIBRARIES = ("numpy", "torch", "scipy", "cv2")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux), empty where unknown."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pin_cpu_kernels() -> dict[str, str]:
    """Set `CPU_KERNELS` as environment defaults, before numpy, scipy or torch load; returns what was set.

    Does nothing once one of those libraries is loaded: some of them would already have chosen their kernels,
    and worker processes (which inherit the environment) must compute like their parent.
    """
    loaded = [name for name in _LIBRARIES if name in sys.modules]
    if loaded:
        log.debug("CPU kernels not pinned: %s already loaded", ", ".join(loaded))
        return {}
    flags = cpu_flags()
    pinned = {}
    for name, value in CPU_KERNELS.items():
        if name in os.environ or not _NEEDS.get(name, set()) <= flags:
            continue
        os.environ[name] = value
        pinned[name] = value
    return pinned


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to `threads`, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def blas_threads(threads: int = 1) -> Iterator[None]:
    """Run the block with numpy's and scipy's BLAS (OpenBLAS) on `threads` threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads, user_api="blas"):
        yield


def ordered_matmul(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`points @ matrix` ([..., K] by [K, M]) as K elementwise multiply-adds in a fixed order, not through BLAS.

    BLAS picks its kernels by CPU (FMA or not, vector width): with OPENBLAS_CORETYPE=SandyBridge instead of this
    machine's Haswell kernels, the render's exact flow moved by up to 9e-6 px. Elementwise float operations round
    the same on every CPU, so what is computed from these products does not depend on the BLAS build or machine.
    For small K (coordinates, a few lights or points); numpy is imported by the caller.
    """
    import numpy as np

    points = np.asarray(points)
    matrix = np.asarray(matrix)
    dtype = np.result_type(points, matrix)
    out = points[..., :1].astype(dtype) * matrix[0].astype(dtype)
    for k in range(1, matrix.shape[0]):
        out = out + points[..., k : k + 1] * matrix[k].astype(dtype)
    return out


__all__ = ["CPU_KERNELS", "blas_threads", "cpu_flags", "ordered_matmul", "pin_cpu_kernels", "torch_threads"]
