"""Datasets: rendered splits with dense GT, DensePose-COCO / PoseTrack I/O, augmentations."""
