"""The one shape in which every dataset source hands its images to the data module."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ablate.errors import DatasetError


@dataclass(frozen=True)
class ImageSplits:
    """Official train and test splits as whole tensors: images float32 NCHW in [0, 1], labels
    int64. The data module carves validation out of ``train``, the same way for every source."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def check(self, channels: int, num_classes: int) -> None:
        """Fail early when the data disagrees with what the network was built for."""
        found = (self.channels, self.num_classes)
        wanted = (channels, num_classes)
        if found != wanted:
            raise DatasetError(
                f"dataset {self.name!r} has (channels, classes) = {found}, but the config says "
                f"{wanted}; fix dataset.channels/num_classes")

    def resized(self, image_size: int) -> ImageSplits:
        """The splits at ``image_size`` x ``image_size`` (bilinear, antialiased when shrinking):
        ``dataset.image_size`` for every source (the digits upsampled to the paper's 32x32, any
        dataset shrunk by a cheap preset), once, before preprocessing."""
        if image_size == self.image_size:
            return self

        def resize(x: torch.Tensor) -> torch.Tensor:
            shrink = image_size < x.shape[-1]
            out = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                align_corners=False, antialias=shrink)
            return out.clamp_(0.0, 1.0)

        return replace(self, train_x=resize(self.train_x), test_x=resize(self.test_x))
