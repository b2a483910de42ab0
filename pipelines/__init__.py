"""The bodymap Kubeflow pipeline (pipelines/pipeline.py) and its compile command (`python -m pipelines.compile`)."""

from pipelines.pipeline import build_pipeline

__all__ = ["build_pipeline"]
