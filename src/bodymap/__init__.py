"""bodymap: BodyMap dense human correspondences and Slim DensePose annotation efficiency, as an MLOps pipeline.

The library computes; the CLI (`bodymap.cli`), DVC stages and KFP components are thin shells over it.
"""

__version__ = "0.1.0"
