"""Training-time augmentation as whole-batch tensor operations on the training device.

Each augmentation is an ``ablate.data.batches.Augment``: ``augment(x, generator) -> x`` on one
NCHW batch, every draw from ``generator`` (on ``x``'s device, seeded per epoch, so a resumed run
replays it), one value per image in one tensor: no per-image Python.

Augmentation runs after preprocessing, as in the reproductions that trained on pre-whitened
data, so zero fill means "the training mean", not black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(count: int, low: float, high: float, x: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
    draw = torch.rand(count, generator=generator, device=x.device, dtype=x.dtype)
    return draw * (high - low) + low


class FlipTranslate:
    """The paper's small augmentation (7.25 % on CIFAR-10): flips and shifts of up to 5 px.

    Each image is mirrored left-right with probability 1/2, then moved by integers ``(dy, dx)``
    drawn uniformly from ``[-max_shift, max_shift]``, zeros moving in: exact, no interpolation.

    ``prepare`` pads the images once with ``max_shift`` zeros and stores a mirrored copy beside
    them (on the device: 2 x (1 + 2 * max_shift / 32) ** 2, about 3.4x the training images), so
    a flipped, shifted image is a window of that tensor, and ``select`` cuts a batch of windows
    with one ``index_select`` over a strided view. ``TensorBatches`` prepares the training set
    once and selects per batch: batching and augmenting in one copy.
    """

    def __init__(self, max_shift: int = 5, flip: bool = True) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift, self.flip = max_shift, flip

    def prepare(self, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Zero-padded images, then (when flipping) their zero-padded mirror images."""
        n, c, h, w = images.shape
        s = self.max_shift
        prepared = images.new_zeros(2 if self.flip else 1, n, c, h + 2 * s, w + 2 * s)
        for start in range(0, n, chunk):  # chunks bound the temporary mirrored copy
            part = images[start : start + chunk]
            prepared[0, start : start + chunk, :, s : s + h, s : s + w] = part
            if self.flip:
                prepared[1, start : start + chunk, :, s : s + h, s : s + w] = part.flip(-1)
        return prepared

    def select(self, prepared: torch.Tensor, index: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """Images ``index`` of a ``prepare``d tensor, each randomly flipped and shifted."""
        slots, count, c, rows, cols = prepared.shape
        if slots != (2 if self.flip else 1):
            raise ValueError("select needs a tensor made by this transform's own prepare")
        s = self.max_shift
        h, w = rows - 2 * s, cols - 2 * s
        n, device = len(index), prepared.device
        image = index.to(device)
        if self.flip:
            mirror = torch.rand(n, generator=generator, device=device) < 0.5
            image = image + mirror.long() * count
        shifts = torch.randint(-s, s + 1, (2, n), generator=generator, device=device)
        # out[y, x] = padded[y - dy + s, x - dx + s]: a window starting at row s - dy, col s - dx.
        plane = rows * cols
        start = image * (c * plane) + (s - shifts[0]) * cols + (s - shifts[1])
        flat = prepared.view(-1)
        span = (c - 1) * plane + (h - 1) * cols + w
        windows = flat.as_strided((flat.numel() - span + 1, c, h, w), (1, plane, cols, 1))
        return windows.index_select(0, start)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.select(self.prepare(x), torch.arange(len(x), device=x.device), generator)


@dataclass
class LargeAugment:
    """An approximation of the paper's large augmentation (4.41 % on CIFAR-10).

    The paper only describes it in prose (126x126 canvases, heavily scaled, rotated and colour
    augmented, for a larger network); our defaults follow Dosovitskiy et al. (2014):

    * geometry: each image is resampled (bilinear, zero fill) onto a ``size`` x ``size`` canvas,
      which it fills at scale 1, with a scale drawn log-uniformly from ``scale``, a rotation of
      up to ``rotation`` degrees, a shift of up to ``translate`` times the canvas side and a
      left-right flip with probability 1/2 (one ``affine_grid`` + ``grid_sample`` per batch);
    * colour, on the preprocessed tensor (not a photometric transform of the pixels): the
      deviation from the image's mean times a contrast factor drawn log-uniformly from
      ``contrast`` and a per-channel gain within ``1 +- channel_gain``, plus a per-channel shift
      of up to ``brightness`` times the image's standard deviation.

    Evaluation images are placed once by ``eval_transform`` (scale 1, nothing random).
    """

    size: int = 126
    scale: tuple[float, float] = (0.7, 1.4)
    rotation: float = 20.0
    translate: float = 0.2
    flip: bool = True
    contrast: tuple[float, float] = (0.5, 2.0)
    channel_gain: float = 0.2
    brightness: float = 0.2

    def __post_init__(self) -> None:
        self.scale, self.contrast = tuple(self.scale), tuple(self.contrast)  # YAML gives lists
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] or not 0 < self.contrast[0] <= self.contrast[1]:
            raise ValueError(f"scale {self.scale} and contrast {self.contrast} must be "
                             "0 < low <= high")

    def _resample(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [len(x), x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def eval_transform(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic placement on the canvas: scale 1, centred, upright."""
        theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(len(x), 2, 3)
        return self._resample(x, theta)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)
        log_low, log_high = math.log(self.scale[0]), math.log(self.scale[1])
        scale = _uniform(n, log_low, log_high, x, generator).exp()
        angle = _uniform(n, -self.rotation, self.rotation, x, generator) * (math.pi / 180.0)
        shift = _uniform(2 * n, -2 * self.translate, 2 * self.translate, x, generator).view(n, 2)
        mirror = torch.ones(n, device=x.device, dtype=x.dtype)
        if self.flip:
            mirror = torch.where(_uniform(n, 0.0, 1.0, x, generator) < 0.5, -mirror, mirror)
        # theta maps canvas coordinates to input coordinates: the inverse of
        # "mirror, rotate, scale, then shift", in grid_sample's [-1, 1] units.
        cos, sin = angle.cos() / scale, angle.sin() / scale
        inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
        inverse[:, 0] *= mirror.view(n, 1)
        offset = -(inverse @ shift.unsqueeze(2))
        out = self._resample(x, torch.cat([inverse, offset], 2))
        return self._colour(out, generator)

    def _colour(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = x.shape[:2]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        log_low, log_high = math.log(self.contrast[0]), math.log(self.contrast[1])
        contrast = _uniform(n, log_low, log_high, x, generator).exp().view(n, 1, 1, 1)
        gain = _uniform(n * c, 1 - self.channel_gain, 1 + self.channel_gain, x, generator)
        shift = _uniform(n * c, -self.brightness, self.brightness, x, generator)
        gain, shift = gain.view(n, c, 1, 1), shift.view(n, c, 1, 1)
        return (x - mean) * (contrast * gain) + mean + shift * std
