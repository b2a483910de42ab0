"""KFP components: one thin shell per `bodymap` stage (see components/stages.py), all on the project image."""

from components._shell import project_image
from components.placement import gpu_placement
from components.stages import (
    cse_infer,
    cse_init,
    cse_merge,
    cse_train,
    evaluate,
    evaluate_merge,
    evaluate_shard,
    finetune,
    pretrain,
    pseudo_gt,
    register,
    render,
    template,
)

STAGE_COMPONENTS = {
    "template": template,
    "render": render,
    "cse_init": cse_init,
    "pseudo_gt": pseudo_gt,
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluate": evaluate,
    "register": register,
}

# The steps of a sharded cse_init and evaluate (cluster.shards > 1): a stage in several tasks, each a `bodymap` call.
SHARDED_COMPONENTS = {
    "cse_train": cse_train,
    "cse_infer": cse_infer,
    "cse_merge": cse_merge,
    "evaluate_shard": evaluate_shard,
    "evaluate_merge": evaluate_merge,
}

__all__ = [
    "SHARDED_COMPONENTS",
    "STAGE_COMPONENTS",
    "cse_infer",
    "cse_init",
    "cse_merge",
    "cse_train",
    "evaluate",
    "evaluate_merge",
    "evaluate_shard",
    "finetune",
    "gpu_placement",
    "pretrain",
    "project_image",
    "pseudo_gt",
    "register",
    "render",
    "template",
]
