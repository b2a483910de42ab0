"""benchmarks/left_right.py: the mirror shares and oracles on predictions whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script


def _left_right():
    return load_script("benchmarks/left_right.py")


def _write(gt_dir: Path, out: Path, vertex_of) -> None:
    out.mkdir()
    for path in sorted(gt_dir.glob("*.npz")):
        gt = np.load(path)
        np.savez(out / path.name, vertex=vertex_of(gt))


def test_truth_its_mirror_and_one_mirrored_person(rendered: Path, template, tmp_path: Path) -> None:
    lr = _left_right()
    gt_dir = rendered / "test" / "gt"
    sym = template.symmetry

    def truth(gt):
        return np.where(gt["mask"], gt["vertex"], -1)

    def mirrored(gt):
        v = truth(gt)
        return np.where(v >= 0, sym[np.maximum(v, 0)], -1)

    def first_person_mirrored(gt):
        v, first = truth(gt), gt["person"] == gt["person"][gt["mask"]].min()
        return np.where(first & (v >= 0), sym[np.maximum(v, 0)], v)

    for name, fn in (("truth", truth), ("mirrored", mirrored), ("one", first_person_mirrored)):
        _write(gt_dir, tmp_path / name, fn)
    exact = lr.left_right(gt_dir, tmp_path / "truth", template, 10.0)
    assert exact["as predicted"] == pytest.approx(100.0)
    assert exact["mirrored"] < 60.0  # only pixels near the body's mid-plane are within 10 cm of their mirror point
    flipped = lr.left_right(gt_dir, tmp_path / "mirrored", template, 10.0)
    assert flipped["mirrored"] == pytest.approx(100.0)
    assert flipped["as predicted"] == pytest.approx(exact["mirrored"])
    one = lr.left_right(gt_dir, tmp_path / "one", template, 10.0)
    assert one["oracle per person"] == pytest.approx(100.0) and one["oracle per person and part"] == pytest.approx(
        100.0
    )
    assert one["as predicted"] < 100.0 and one["oracle per pixel"] == pytest.approx(100.0)
