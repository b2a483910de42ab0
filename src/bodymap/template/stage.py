"""`bodymap template`: build the template artifact once; every later stage reads its arrays."""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

import numpy as np

from bodymap.config import Params, TemplateParams
from bodymap.io import atomic_dir, save_npz, write_json, write_run_info
from bodymap.template.build import build_from_anny, build_from_mesh
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


def geodesic_error(template: BodyTemplate, geodesics: Geodesics, pairs: int = 200, seed: int = 0) -> dict[str, float]:
    """Compare the lookup with exact polyhedral geodesics (edge-flip shortening of the Dijkstra path).

    Returns mean/max absolute error (m) and mean relative error, over random pairs and over near pairs (< 10 cm).
    """
    import potpourri3d as pp3d

    rng = np.random.default_rng(seed)
    solver = pp3d.EdgeFlipGeodesicSolver(template.vertices.astype(np.float64), template.faces.astype(np.int64))
    i = rng.integers(template.num_vertices, size=pairs)
    # Half the pairs are near neighbours: the short range matters most for the cm and window metrics.
    j = rng.integers(template.num_vertices, size=pairs)
    near = np.argsort(
        np.linalg.norm(template.vertices - template.vertices[i[: pairs // 2], None], axis=2), axis=1, kind="stable"
    )
    j[: pairs // 2] = near[np.arange(pairs // 2), rng.integers(1, 40, size=pairs // 2)]
    exact = np.array(
        [
            np.linalg.norm(np.diff(solver.find_geodesic_path(int(a), int(b)), axis=0), axis=1).sum()
            for a, b in zip(i, j, strict=True)
        ]
    )
    approx = geodesics.pair(i, j)
    err = np.abs(approx - exact)
    close = exact < 0.10
    return {
        "geodesic_pairs": int(pairs),
        "geodesic_abs_err_mean_m": float(err.mean()),
        "geodesic_abs_err_max_m": float(err.max()),
        "geodesic_rel_err_mean": float((err / np.maximum(exact, 1e-6)).mean()),
        "geodesic_near_abs_err_mean_m": float(err[close].mean()) if close.any() else 0.0,
    }


def build_template(p: TemplateParams, out: Path) -> dict[str, float]:
    """Build the whole artifact into `out` (atomically) and return its figures."""
    start = time.monotonic()
    if p.source == "anny":
        template = build_from_anny(p.anny_topology, p.shape.model_dump(), p.lbo_k)
    else:
        if p.mesh.path is None or p.mesh.charts is None:
            from bodymap.errors import BodymapError

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
            **geodesic_error(template, geodesics),
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
