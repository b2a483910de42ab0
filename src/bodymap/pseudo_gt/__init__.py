"""Dense pseudo ground truth from sparse DensePose points + CSE; Slim DensePose's optical-flow label propagation."""
