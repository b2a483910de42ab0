"""Continuous Surface Embeddings on any template: BodyMap's initialisation and the baseline row."""
