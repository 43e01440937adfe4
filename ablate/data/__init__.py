"""Datasets as tensors: sources load raw splits, the data module batches them on the device."""
