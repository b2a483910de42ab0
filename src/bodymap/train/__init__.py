"""The shared training loop (DDP, AMP, checkpoints, resume) used by cse_init, pretrain and finetune."""

from bodymap.train.checkpoint import load_checkpoint, save_checkpoint
from bodymap.train.loop import TrainResult, train

__all__ = ["TrainResult", "load_checkpoint", "save_checkpoint", "train"]
