"""KFP components: one thin shell per `bodymap` stage (see components/stages.py), all on the project image."""

from components._shell import project_image
from components.placement import gpu_placement
from components.stages import cse_init, evaluate, finetune, pretrain, pseudo_gt, register, render, template

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

__all__ = [
    "STAGE_COMPONENTS",
    "cse_init",
    "evaluate",
    "finetune",
    "gpu_placement",
    "pretrain",
    "project_image",
    "pseudo_gt",
    "register",
    "render",
    "template",
]
