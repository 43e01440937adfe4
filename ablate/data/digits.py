"""The offline default: scikit-learn's handwritten digits, a real image set shipped in the package.

1,797 8x8 grey images of the digits 0-9 (UCI optdigits test set), upsampled to
``dataset.image_size`` (32, as the paper's networks expect). With no official test split, a
fixed, stratified one is drawn with ``split_seed``: every run of a grid is scored on the same
images.
"""

from __future__ import annotations

import torch

from ablate.data.splits import ImageSplits
from ablate.errors import DatasetError


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> ImageSplits:
    """Load the digits at their native 8x8 and split them into train and test tensors."""
    from sklearn.datasets import load_digits as sklearn_digits

    if not 0 < test_fraction < 1:
        raise DatasetError(f"dataset.test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(split_seed)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test_mask[members[: round(len(members) * test_fraction)]] = True
    return ImageSplits(name="digits", train_x=images[~test_mask].contiguous(),
                       train_y=labels[~test_mask].contiguous(),
                       test_x=images[test_mask].contiguous(),
                       test_y=labels[test_mask].contiguous(), num_classes=10)
