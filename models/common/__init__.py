"""Shared pieces of the training module: run folders, checkpoints, augmentation, ONNX export."""
