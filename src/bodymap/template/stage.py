"""`bodymap template`: build the template artifact once; every later stage reads its arrays."""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

import numpy as np

from bodymap.config import Params, TemplateParams
from bodymap.errors import BodymapError
from bodymap.io import atomic_dir, save_npz, write_json, write_run_info
from bodymap.template.build import build_from_anny, build_from_densepose, build_from_mesh
from bodymap.template.geodesic import Geodesics, build_dense, build_landmarks
from bodymap.template.mesh import BodyTemplate
from bodymap.template.pictures import save_pictures
from bodymap.tracking import Tracker

log = logging.getLogger(__name__)

# Figures of the build run rather than of the artifact: they differ from run to run.
RUN_FIGURES = ("geodesic_seconds", "build_seconds", "peak_memory_mb")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory of the template artifact")
    parser.add_argument("--metrics", type=Path, default=None, help="also write the build figures here (DVC metrics)")


_MMP = None


def _init_mmp(vertices: np.ndarray, faces: np.ndarray) -> None:
    global _MMP
    from pygeodesic.geodesic import PyGeodesicAlgorithmExact

    _MMP = PyGeodesicAlgorithmExact(vertices, faces)


def _mmp_row(source: int) -> np.ndarray:
    return _MMP.geodesicDistances(np.array([source]), None)[0]


def _mmp_pair(job: tuple[int, int, float]) -> float:
    source, target, bound = job
    d = _MMP.geodesicDistances(np.array([source]), np.array([target]), bound)[0][0]
    if not d < bound:  # the bound was too tight (a gross underestimate of the lookup): propagate everywhere
        d = _MMP.geodesicDistances(np.array([source]), np.array([target]))[0][0]
    return float(d)


def geodesic_error(
    template: BodyTemplate,
    geodesics: Geodesics,
    pairs: int = 1000,
    seed: int = 0,
    far_sources: int = 25,
    workers: int = 1,
) -> dict[str, float]:
    """Compare the lookup with exact polyhedral geodesics (MMP, Kirsanov's implementation through pygeodesic).

    Half the pairs are near (a random vertex and one of its 40 Euclidean nearest), the other half random, drawn
    as `far_sources` random sources with random targets each: an exact propagation from a source gives every
    target at once, so the far half also reports the error over all V targets of those sources (`rows`). Near
    pairs propagate only up to a bound of the lookup, so they cost milliseconds. Returns mean/max absolute error
    (m), mean relative error, and the mean/max over pairs closer than 10 cm.
    """
    import multiprocessing as mp

    rng = np.random.default_rng(seed)
    n = template.num_vertices
    vertices, faces = template.vertices.astype(np.float64), template.faces.astype(np.int32)
    half = pairs // 2
    i_near = rng.integers(n, size=half)
    k = min(40, n - 1)
    rank = rng.integers(1, k, size=half) if k > 1 else np.zeros(half, np.int64)
    j_near = np.empty(half, np.int64)
    for start in range(0, half, 100):  # the k nearest of each vertex, 100 rows of [V] distances at a time
        block = np.linalg.norm(vertices - vertices[i_near[start : start + 100], None], axis=2)
        order = np.argpartition(block, k, axis=1)[:, :k]
        order = np.take_along_axis(
            order, np.argsort(np.take_along_axis(block, order, axis=1), axis=1, kind="stable"), axis=1
        )
        j_near[start : start + 100] = order[np.arange(len(order)), rank[start : start + 100]]
    per_source = -(-(pairs - half) // far_sources)
    sources = rng.integers(n, size=far_sources)
    i_far = np.repeat(sources, per_source)[: pairs - half]
    j_far = rng.integers(n, size=(far_sources, per_source)).ravel()[: pairs - half]
    approx_near = geodesics.pair(i_near, j_near)
    jobs = [(int(a), int(b), float(2.0 * d + 0.05)) for a, b, d in zip(i_near, j_near, approx_near, strict=True)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers, initializer=_init_mmp, initargs=(vertices, faces)) as pool:
            rows = np.stack(pool.map(_mmp_row, [int(s) for s in sources]))
            exact_near = np.array(pool.map(_mmp_pair, jobs, chunksize=50))
    else:
        _init_mmp(vertices, faces)
        rows = np.stack([_mmp_row(int(s)) for s in sources])
        exact_near = np.array([_mmp_pair(job) for job in jobs])
    exact_far = rows[np.repeat(np.arange(far_sources), per_source)[: pairs - half], j_far]
    exact = np.concatenate([exact_near, exact_far])
    approx = np.concatenate([approx_near, geodesics.pair(i_far, j_far)])
    err = np.abs(approx - exact)
    close = exact < 0.10
    rows_err = np.abs(geodesics.rows(sources) - rows)
    return {
        "geodesic_pairs": int(pairs),
        "geodesic_abs_err_mean_m": float(err.mean()),
        "geodesic_abs_err_max_m": float(err.max()),
        "geodesic_rel_err_mean": float((err / np.maximum(exact, 1e-6)).mean()),
        "geodesic_near_abs_err_mean_m": float(err[close].mean()) if close.any() else 0.0,
        "geodesic_near_abs_err_max_m": float(err[close].max()) if close.any() else 0.0,
        "geodesic_rows_pairs": int(rows.size),
        "geodesic_rows_abs_err_mean_m": float(rows_err.mean()),
        "geodesic_rows_abs_err_max_m": float(rows_err.max()),
    }


def build_template(p: TemplateParams, out: Path) -> dict[str, float]:
    """Build the whole artifact into `out` (atomically) and return its figures."""
    start = time.monotonic()
    if p.source == "anny":
        template = build_from_anny(p.anny_topology, p.shape.model_dump(), p.lbo_k)
    elif p.source == "densepose":
        d = p.densepose
        if d.model is None or d.uv_data is None:
            raise BodymapError(
                "template.densepose.model and template.densepose.uv_data must be set when template.source is "
                "'densepose' (the SMPL model file and DensePose's UV_Processed.mat)"
            )
        template = build_from_densepose(d.model, d.uv_data, d.name, p.lbo_k, d.symmetry)
    else:
        if p.mesh.path is None or p.mesh.charts is None:
            raise BodymapError("template.mesh.path and template.mesh.charts must be set when template.source is 'mesh'")
        template = build_from_mesh(p.mesh.path, p.mesh.charts, p.mesh.name, p.lbo_k)
    log.info("template %s: %s", template.name, template.summary())
    with atomic_dir(out) as tmp:
        template.save(tmp)
        geo_start = time.monotonic()
        if p.geodesics.mode == "dense":
            build_dense(template.vertices, template.faces, tmp / "geodesics.npy", workers=p.geodesics.workers)
        else:
            landmarks = build_landmarks(template.vertices, template.faces, p.geodesics.landmarks, p.geodesics.workers)
            save_npz(tmp / "geodesics_landmarks.npz", compressed=False, **landmarks)
        geo_seconds = time.monotonic() - geo_start
        geodesics = Geodesics.load(tmp)
        figures = {
            **template.summary(),
            "geodesic_mode": p.geodesics.mode,
            "geodesic_seconds": round(geo_seconds, 1),
            **geodesic_error(template, geodesics, workers=p.geodesics.workers),
        }
        if geodesics.mode == "landmarks":
            figures["geodesic_landmark_radius_max_m"] = float(geodesics.radius.max())
        save_pictures(template, tmp / "pictures", p.picture_size)
        figures["build_seconds"] = round(time.monotonic() - start, 1)
        figures["artifact_mb"] = round(sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 2**20, 1)
        rss = max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        )
        figures["peak_memory_mb"] = round(rss / 1024, 1)
        # The artifact keeps only figures of its content: with the run's seconds and memory in it, no two builds
        # had the same bytes (nor DVC hash). Those go to --metrics and MLflow.
        write_json(tmp / "metrics.json", {k: v for k, v in figures.items() if k not in RUN_FIGURES})
        write_run_info(tmp, "template", p.model_dump(mode="json"))
    return figures


def main(args: argparse.Namespace, params: Params) -> int:
    tracker = Tracker()
    with tracker.run("template", params=params.template.model_dump(mode="json")):
        figures = build_template(params.template, args.out)
        tracker.log_metrics({k: v for k, v in figures.items() if isinstance(v, int | float)})
        tracker.log_artifact(args.out / "pictures")
    if args.metrics is not None:
        write_json(args.metrics, figures)
    log.info("template written to %s: %s", args.out, figures)
    return 0


__all__ = ["build_template", "geodesic_error"]
