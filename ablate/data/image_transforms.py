"""Per-image crops for data streamed from shards, with PIL and torch only (no torchvision).

The usual ImageNet recipe, run in DataLoader workers on decoded images of any size:
training takes a random crop of 8-100 % of the image's area with an aspect ratio in 3/4..4/3,
resized to 224x224, flipped left-right with probability 1/2 (Szegedy et al. 2015, the crop
every ImageNet reproduction uses); evaluation resizes the shorter side to 256 and takes the
central 224x224. Each crop is one ``Image.resize`` with a ``box``: PIL resamples straight from
the source region, antialiased when it shrinks, instead of cropping and resizing in two passes.
Every random draw comes from the ``random.Random`` the caller passes, so a worker's stream is
fixed by its seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# Per-channel mean and standard deviation of ILSVRC-2012's training images (RGB, pixels in
# [0, 1]): the normalisation every published ImageNet model since AlexNet's ports uses.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RandomResizedCrop:
    """Training: a random region (``scale`` of the area, ``ratio`` = width / height), resized to
    ``size`` x ``size``, mirrored with probability ``flip``."""

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    attempts: int = 10  # draws before falling back to the central crop (a very long image)

    def box(self, width: int, height: int, rng: random.Random) -> Box:
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.attempts):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_low, log_high))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = rng.randint(0, width - w), rng.randint(0, height - h)
                return left, top, left + w, top + h
        # none fitted: the largest central region whose aspect ratio is within ``ratio``
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        w, h = (width, round(width / aspect)) if width / height < aspect else (
            round(height * aspect), height)
        w, h = min(w, width), min(h, height)
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        out = image.resize((self.size, self.size), Image.Resampling.BILINEAR,
                           box=self.box(image.width, image.height, rng))
        return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < self.flip else out


@dataclass(frozen=True)
class CenterCrop:
    """Evaluation: the shorter side scaled to ``resize``, the central ``size`` x ``size``."""

    size: int = 224
    resize: int = 256

    def box(self, width: int, height: int) -> Box:
        """The source region that becomes the crop: ``size / resize`` of the shorter side."""
        side = min(width, height) * self.size / self.resize
        left, top = (width - side) / 2, (height - side) / 2
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> Image.Image:
        return image.resize((self.size, self.size), Image.Resampling.BILINEAR,
                            box=self.box(image.width, image.height))


@dataclass(frozen=True)
class Normalise:
    """An RGB image to a float CHW tensor: pixels / 255, then per-channel ``(x - mean) / std``
    (``mean`` 0 and ``std`` 1: plain pixels in [0, 1])."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        scale = torch.tensor(self.std).view(3, 1, 1) * 255.0
        return (pixels.float() - torch.tensor(self.mean).view(3, 1, 1) * 255.0) / scale
