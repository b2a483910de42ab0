"""benchmarks/against_input.py: the fixed / broken split on predictions whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script


def _write(gt_dir: Path, out: Path, vertex_of) -> None:
    out.mkdir()
    for path in sorted(gt_dir.glob("*.npz")):
        np.savez(out / path.name, vertex=vertex_of(np.load(path)).astype(np.int32))


def test_fixed_and_broken_add_up_to_the_difference(rendered: Path, template, tmp_path: Path) -> None:
    ai = load_script("benchmarks/against_input.py")
    gt_dir = rendered / "test" / "gt"
    sym = template.symmetry

    def truth(gt):
        return np.where(gt["mask"], gt["vertex"], -1)

    def first_person(gt):
        return gt["person"] == gt["person"][gt["mask"]].min()

    def first_background(gt):
        return np.where(first_person(gt), -1, truth(gt))

    def first_mirrored(gt):
        v = truth(gt)
        return np.where(first_person(gt) & (v >= 0), sym[np.maximum(v, 0)], v)

    for name, fn in (
        ("truth", truth),
        ("first_background", first_background),
        ("first_mirrored", first_mirrored),
        ("background", lambda gt: np.full(gt["vertex"].shape, -1)),
    ):
        _write(gt_dir, tmp_path / name, fn)
    geo = template.geodesics

    same = ai.against_input(gt_dir, tmp_path / "truth", tmp_path / "truth", geo, 10.0)
    assert same == pytest.approx(
        {
            "input": 100,
            "model": 100,
            "keeps the input": 100,
            "fixed": 0,
            "broken to background": 0,
            "broken to another vertex": 0,
        }
    )
    # the model restores the first person the input left as background: all of it fixed, nothing broken
    fixed = ai.against_input(gt_dir, tmp_path / "first_background", tmp_path / "truth", geo, 10.0)
    share = 100.0 - fixed["input"]
    assert 0.0 < share < 100.0
    assert fixed["model"] == pytest.approx(100.0) and fixed["fixed"] == pytest.approx(share)
    assert fixed["keeps the input"] == pytest.approx(100.0 - share)
    # the other way round, the same pixels are broken to background
    lost = ai.against_input(gt_dir, tmp_path / "truth", tmp_path / "first_background", geo, 10.0)
    assert lost["broken to background"] == pytest.approx(share) and lost["broken to another vertex"] == 0.0
    # mirroring the first person breaks its pixels away from the mid-plane to another vertex, not to background
    flip = ai.against_input(gt_dir, tmp_path / "truth", tmp_path / "first_mirrored", geo, 10.0)
    assert 0.0 < flip["broken to another vertex"] < share and flip["broken to background"] == 0.0
    nothing = ai.against_input(gt_dir, tmp_path / "truth", tmp_path / "background", geo, 10.0)
    assert nothing["broken to background"] == pytest.approx(100.0) and nothing["model"] == 0.0
    for r in (same, fixed, lost, flip, nothing):
        assert r["model"] == pytest.approx(
            r["input"] + r["fixed"] - r["broken to background"] - r["broken to another vertex"]
        )


def test_a_missing_prediction_names_the_file(rendered: Path, template, tmp_path: Path) -> None:
    ai = load_script("benchmarks/against_input.py")
    gt_dir = rendered / "test" / "gt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty/.*\.npz: missing"):
        ai.against_input(gt_dir, tmp_path / "empty", tmp_path / "empty", template.geodesics, 10.0)


def test_the_gap_interval_is_paired_over_images_and_seeded(rendered: Path, template, tmp_path: Path) -> None:
    ai = load_script("benchmarks/against_input.py")
    gt_dir = rendered / "test" / "gt"
    _write(gt_dir, tmp_path / "truth", lambda gt: np.where(gt["mask"], gt["vertex"], -1))
    _write(gt_dir, tmp_path / "none", lambda gt: np.full(gt["vertex"].shape, -1))
    geo = template.geodesics
    same = ai.image_counts(gt_dir, tmp_path / "truth", tmp_path / "truth", geo, 10.0)
    assert ai.gap_interval(same) == (0.0, 0.0)  # paired: the same model on every draw has no gap at all
    up = ai.image_counts(gt_dir, tmp_path / "none", tmp_path / "truth", geo, 10.0)
    assert ai.gap_interval(up) == pytest.approx((100.0, 100.0))  # every pixel fixed, on every draw
    # half the images fixed, half not: a gap that depends on which images are drawn
    half = {k: v.copy() for k, v in up.items()}
    half["model"][::2] = 0
    gap = ai.shares(half)["model"] - ai.shares(half)["input"]
    low, high = ai.gap_interval(half)
    assert low < gap < high and high - low > 1.0
    assert ai.gap_interval(half) == (low, high)  # seeded: the same interval on every run
    assert ai.gap_interval(half, seed=1) != (low, high)
