"""Where a stage that may ask for GPUs runs: KFP fixes a pod's placement before it starts, so a run parameter
(e.g. `finetune_gpus`) reaches the node selector and tolerations through this small task's outputs."""

from typing import NamedTuple

from components._shell import component


@component()
def gpu_placement(gpus: int, cluster_params: str) -> NamedTuple("Placement", node_selector=dict, tolerations=list):
    """Node selector and tolerations for a pod with `gpus` GPUs: the cluster's GPU (V100) nodes, or none for 0."""
    import json
    from typing import NamedTuple

    from bodymap.cluster.manifest import placement
    from bodymap.config import validate_params

    cluster = validate_params({"cluster": {**json.loads(cluster_params), "gpus_per_node": gpus}}, "gpu_placement")
    pod = placement(cluster.cluster)

    class Placement(NamedTuple):
        node_selector: dict
        tolerations: list

    return Placement(pod.get("nodeSelector", {}), pod.get("tolerations", []))
