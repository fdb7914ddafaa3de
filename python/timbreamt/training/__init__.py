"""Training (the ``[train]`` extra: torch): CQT front end, models, losses, synthetic data, checkpoints,
the training loop, metrics and ONNX export."""
