"""DensePose conventions shared by the template, the data readers and the evaluator.

Charts `I` are 1..24, coarse parts (the 14 `dp_masks` entries) are 1..14; 0 is background in both.
Left/right are the person's own sides. Within each front/back pair the lower id is the back, the higher the front
(torso 1 back / 2 front, ...); the head splits into 23 right and 24 left (Güler et al., DensePose, CVPR 2018;
docs/formats.md).
"""

from __future__ import annotations

import numpy as np

CHART_NAMES: tuple[str, ...] = (
    "background",
    "torso_back",
    "torso_front",
    "hand_right",
    "hand_left",
    "foot_left",
    "foot_right",
    "upper_leg_right_back",
    "upper_leg_left_back",
    "upper_leg_right_front",
    "upper_leg_left_front",
    "lower_leg_right_back",
    "lower_leg_left_back",
    "lower_leg_right_front",
    "lower_leg_left_front",
    "upper_arm_left_back",
    "upper_arm_right_back",
    "upper_arm_left_front",
    "upper_arm_right_front",
    "lower_arm_left_back",
    "lower_arm_right_back",
    "lower_arm_left_front",
    "lower_arm_right_front",
    "head_right",
    "head_left",
)

PART_NAMES: tuple[str, ...] = (
    "background",
    "torso",
    "hand_right",
    "hand_left",
    "foot_left",
    "foot_right",
    "upper_leg_right",
    "upper_leg_left",
    "lower_leg_right",
    "lower_leg_left",
    "upper_arm_left",
    "upper_arm_right",
    "lower_arm_left",
    "lower_arm_right",
    "head",
)

# chart I -> coarse part (dp_masks order); index 0 is background.
CHART_TO_PART = np.array(
    [0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 14], np.uint8
)

# Horizontal-flip tables (detectron2 DensePose): chart and coarse-part labels of the mirrored person.
CHART_FLIP = np.array(
    [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23], np.uint8
)
PART_FLIP = np.array([0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14], np.uint8)

# GPS normalisation kappa per chart (from the coarse part of dp_I), detectron2's per-part values.
CHART_KAPPA = np.array(
    [0.255, 0.351, 0.351, 0.107, 0.107, 0.126, 0.126]
    + [0.237] * 4
    + [0.173] * 4
    + [0.142] * 4
    + [0.128] * 4
    + [0.150] * 2,
    np.float32,
)
DEFAULT_KAPPA = 0.255

# Coarse groups for per-part metric breakdowns.
PART_GROUPS: dict[str, tuple[int, ...]] = {
    "torso": (1, 2),
    "head": (23, 24),
    "hands": (3, 4),
    "feet": (5, 6),
    "arms": tuple(range(15, 23)),
    "legs": tuple(range(7, 15)),
}


def chart_group(chart: np.ndarray) -> np.ndarray:
    """Map chart ids [...] uint8 to group names [...] object (per-part breakdowns); 0 maps to 'background'."""
    lookup = np.array(["background"] * 25, dtype=object)
    for name, charts in PART_GROUPS.items():
        lookup[list(charts)] = name
    return lookup[chart]


assert len(CHART_NAMES) == 25 and len(PART_NAMES) == 15 and len(CHART_KAPPA) == 25
assert all(CHART_TO_PART[CHART_FLIP[i]] == PART_FLIP[CHART_TO_PART[i]] for i in range(25))
