"""The shared training loop (DDP, AMP, checkpoints, resume) used by cse_init, pretrain and finetune."""

from bodymap.train.checkpoint import load_checkpoint, save_checkpoint
from bodymap.train.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_checkpoint", "save_checkpoint", "train"]
