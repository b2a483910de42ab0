"""Files in DensePose's own layouts, written from the Anny test template (SMPL and its UV data cannot ship here).

`write_uv_processed` writes a `UV_Processed.mat` exactly as DensePose ships it (MATLAB v5 via scipy.io.savemat:
`All_FaceIndices` [F, 1], `All_Faces` [F, 3] 1-based, `All_U_norm`/`All_V_norm` [A, 1], `All_vertices` [1, A]
1-based, all float64 as MATLAB saves them). Its atlas is the template's own charts cut along the chart seams: each
chart's triangles (those whose corners all lie in it, in its largest face-connected piece, as the chart's disk map
lays out) with chart-local copies of their vertices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat

from bodymap.template.charts import largest_component


def atlas_of(template) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(faces [F, 3] 0-based atlas corners, face_chart [F], uv [A, 2], vertex [A] 0-based) of the template's charts."""
    faces_out, charts_out, uv_out, vertex_out = [], [], [], []
    count = 0
    for c in range(1, 25):
        members = template.chart == c
        pure = template.faces[members[template.faces].all(axis=1)]
        if not len(pure):
            continue
        ids = np.unique(pure)
        local = np.full(template.num_vertices, -1)
        local[ids] = np.arange(len(ids))
        keep = largest_component(local[pure], len(ids))
        pure = pure[keep[local[pure]].all(axis=1)]
        ids = np.unique(pure)
        local[:] = -1
        local[ids] = np.arange(len(ids)) + count
        faces_out.append(local[pure])
        charts_out.append(np.full(len(pure), c))
        uv_out.append(template.uv[ids].astype(np.float64))
        vertex_out.append(ids)
        count += len(ids)
    return (np.concatenate(faces_out), np.concatenate(charts_out), np.concatenate(uv_out), np.concatenate(vertex_out))


def write_uv_processed(path: Path, template) -> Path:
    faces, face_chart, uv, vertex = atlas_of(template)
    savemat(
        path,
        {
            "All_FaceIndices": face_chart.astype(np.float64)[:, None],
            "All_Faces": (faces + 1).astype(np.float64),
            "All_U_norm": uv[:, :1],
            "All_V_norm": uv[:, 1:],
            "All_vertices": (vertex + 1).astype(np.float64)[None, :],
        },
    )
    return path


def write_smpl_like_model(path: Path, template) -> Path:
    """An .npz with SMPL's own field names (`v_template`, `f`) holding the template mesh."""
    np.savez(path, v_template=template.vertices.astype(np.float64), f=template.faces.astype(np.uint32))
    return path
