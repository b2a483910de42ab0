"""Model-agnostic evaluation: DensePose GPS / GPSm / mask-IoU AP-AR (detectron2 semantics), geodesic cm accuracy,
pixel-window accuracy, temporal consistency, per-part breakdowns; reports, PR curves and pictures.

Entry points: `evaluate_set` (one prediction set on one ground truth) and `write_report` (a flat metrics JSON for
several); the prediction format is `bodymap.eval.predictions`; the command is `bodymap evaluate`.
"""

from bodymap.eval.evaluate import SetResult, evaluate_set, flatten, write_report
from bodymap.eval.groundtruth import GroundTruth, load_ground_truth, read_coco
from bodymap.eval.predictions import Instances, PredictionSet, PredictionWriter, dense_to_instances

__all__ = [
    "GroundTruth",
    "Instances",
    "PredictionSet",
    "PredictionWriter",
    "SetResult",
    "dense_to_instances",
    "evaluate_set",
    "flatten",
    "load_ground_truth",
    "read_coco",
    "write_report",
]
