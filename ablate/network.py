"""Turn a layer spec into a torch network; the only place that knows both.

``build_network`` is what ``hydra.utils.instantiate`` calls with the model's base layers, the
``downsample`` group's transformation (``ablate.spec``) and the dataset's channels, image size
and number of classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate import spec

Transform = Callable[[Sequence[spec.Layer]], list[spec.Layer]]
Initialiser = Callable[[nn.Module], None]


def _overhang(size: int, kernel: int, stride: int) -> int:
    """Pixels a ceil-mode window reaches past the edge (Caffe's rounding up): 1 for 32 and 16."""
    return (stride - (size - kernel) % stride) % stride if size > kernel else 0


class PNormPool2d(nn.Module):
    """(sum over each window of |x|^p)^(1/p), over max-pooling's windows, safe in any precision.

    Not ``nn.LPPool2d``: its ``ceil_mode`` inflates every window that hangs over the edge (the
    mean over the pixels it covers times the full window size); here the overhang is zeros,
    which add nothing to a p-norm. And x^p overflows (fp16 from x = 2 at p = 16, fp32 past
    x ~ 250), so the sum is taken in fp32 with autocast off, each window divided by its largest
    |x| first (every power <= 1, the largest exactly 1) and multiplied back after.
    """

    def __init__(self, p: float, kernel_size: int, stride: int, ceil_mode: bool = True) -> None:
        super().__init__()
        self.p, self.kernel_size, self.stride = float(p), kernel_size, stride
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        return f"p={self.p:g}, kernel_size={self.kernel_size}, stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        with torch.autocast(x.device.type, enabled=False):
            y = x.float().abs()
            if self.ceil_mode:
                y = F.pad(y, (0, _overhang(y.shape[-1], k, s), 0, _overhang(y.shape[-2], k, s)))
            n, c, height, width = y.shape
            windows = F.unfold(y, k, stride=s).view(n, c, k * k, -1)
            peak = windows.amax(dim=2, keepdim=True)
            # an all-zero window: its sum, clamped to 1, gives 1 * peak = 0 and a zero gradient
            # (0^(1/p) would give an infinite one, and NaN through the powers)
            ratios = windows / peak.clamp_min(torch.finfo(torch.float32).tiny)
            norms = ratios.pow(self.p).sum(dim=2).clamp_min(1.0).pow(1.0 / self.p)
            pooled = norms * peak.squeeze(2)
        return pooled.view(n, c, (height - k) // s + 1, (width - k) // s + 1).to(x.dtype)


class AllConvNet(nn.Sequential):
    """A plain ``nn.Sequential`` that remembers the spec it was built from."""

    def __init__(self, layers: Sequence[spec.Layer], modules: list[nn.Module], name: str):
        super().__init__(*modules)
        self.spec = list(layers)
        self.name = name

    def extra_repr(self) -> str:
        return self.name


def _pool(layer: spec.Layer) -> nn.Module:
    """One downsampling step; all three reductions share max-pooling's windows (``spec``)."""
    k, stride, pad = layer["k"], layer.get("stride", 2), layer.get("pad", 0)
    ceil_mode = layer.get("ceil_mode", True)
    if layer["type"] == "lppool":
        if pad:
            raise spec.SpecError("LP-pooling takes no padding (zeros would enter its p-norm "
                                 "as pixels); use ceil_mode")
        return PNormPool2d(layer["p"], k, stride, ceil_mode)
    if layer["type"] == "avgpool":
        # padding=0: a window that hangs over the edge is averaged over the pixels it covers
        return nn.AvgPool2d(k, stride=stride, padding=pad, ceil_mode=ceil_mode,
                            count_include_pad=False)
    return nn.MaxPool2d(k, stride=stride, padding=pad, ceil_mode=ceil_mode)


def _module(layer: spec.Layer, in_channels: int, num_classes: int) -> tuple[list[nn.Module], int]:
    # Each ReLU is its own module and not in place: attribution methods (guided backprop,
    # deconvnet) replace the backward pass of every ReLU module through hooks, which needs
    # distinct modules whose input is still there when the gradient arrives.
    kind = layer["type"]
    if kind == "conv":
        conv = nn.Conv2d(in_channels, layer["out"], kernel_size=layer["k"],
                         stride=layer.get("stride", 1), padding=spec.padding(layer))
        return [conv, nn.ReLU()], layer["out"]
    if kind == "classifier":
        conv = nn.Conv2d(in_channels, num_classes, kernel_size=layer.get("k", 1))
        return [conv, nn.ReLU()], num_classes
    if kind in spec.POOLS:
        return [_pool(layer)], in_channels
    if kind == "dropout":
        return [nn.Dropout(layer["p"])], in_channels
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten()], in_channels


def build_network(layers: Sequence[Any], transform: Transform, in_channels: int,
                  image_size: int, num_classes: int, width: float = 1.0,
                  init: Initialiser | None = None, name: str = "network",
                  classifier_bias: float | None = None) -> AllConvNet:
    """Apply the downsampling ``transform`` and ``width`` to the base ``layers`` and build it.

    The input size is checked before any tensor is made: images too small fail naming the layer
    that breaks and the smallest size that works. ``classifier_bias``: the classifier's starting
    bias, after ``init`` (None: as ``init`` leaves it). The classifier keeps the paper's ReLU, so
    a class whose score is pushed below 0 at every position for every image gets no gradient
    again; on a small final map (the quick preset's 2x2) that happens while all scores still
    sit near 0, and a positive start keeps every class in play.
    """
    derived = spec.scale_width(transform(spec.normalise(layers)), width)
    try:
        spec.spatial_sizes(derived, image_size)
    except spec.SpecError as error:
        need = spec.minimum_input_size(derived)
        raise spec.SpecError(
            f"{name} cannot take {image_size}x{image_size} images: {error}. It needs inputs of "
            f"at least {need}x{need} (the paper's maps assume 32x32); set dataset.image_size "
            f"to {need} or more."
        ) from None
    modules: list[nn.Module] = []
    channels, classifier = in_channels, None
    for layer in derived:
        made, channels = _module(layer, channels, num_classes)
        classifier = made[0] if layer["type"] == "classifier" else classifier
        modules.extend(made)
    network = AllConvNet(derived, modules, name)
    if init is not None:
        network.apply(init)
    if classifier_bias is not None and classifier is not None:
        nn.init.constant_(classifier.bias, classifier_bias)
    return network


def count_parameters(network: nn.Module) -> int:
    """Weights plus biases, the number the paper's tables count."""
    return sum(p.numel() for p in network.parameters())

