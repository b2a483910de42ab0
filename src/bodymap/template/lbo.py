"""The Laplace-Beltrami eigenbasis of the template, the fixed basis of CSE's vertex embeddings (Neverova et al. 2020).

`L phi = lambda M phi` with the robust intrinsic-Delaunay Laplacian L and lumped mass matrix M of
robust-laplacian (Sharp & Crane 2020); eigenvectors are M-orthonormal: Phi^T M Phi = I.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from bodymap.determinism import blas_threads


def laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(L, M): cotan Laplacian (positive semi-definite) and diagonal mass matrix, both [V, V]."""
    import robust_laplacian

    lap, mass = robust_laplacian.mesh_laplacian(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    return lap.tocsr(), mass.tocsr()


def lbo_basis(vertices: np.ndarray, faces: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k smallest Laplace-Beltrami eigenpairs.

    Returns:
        (eigenvalues [k] float64 ascending, basis [V, k] float32 M-orthonormal, vertex areas [V] float32).
    """
    lap, mass = laplacian(vertices, faces)
    # Shift-invert just below 0: L is singular (constants), L - sigma M is not. ARPACK's start vector is fixed:
    # without v0, scipy draws it from OS entropy, so every build gave a slightly different basis (~1e-8).
    # One BLAS thread: ARPACK's BLAS calls gave other bits on 2 OpenBLAS threads than on 1 (13k vertices), and on
    # a shared 2-core machine one thread was also 8x faster.
    v0 = np.random.default_rng(0).uniform(-1.0, 1.0, lap.shape[0])
    with blas_threads(1):
        values, vectors = eigsh(lap, k=k, M=mass, sigma=-1e-6, which="LM", v0=v0)
    order = np.argsort(values, kind="stable")
    values, vectors = values[order], vectors[:, order]
    # Fix each eigenvector's sign (largest-magnitude entry positive) so rebuilds are reproducible.
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(k)])
    vectors = vectors * signs
    return values, vectors.astype(np.float32), mass.diagonal().astype(np.float32)
