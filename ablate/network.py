"""Turn a layer spec into a torch network; the only place that knows both.

The model's YAML gives the base layers, the ``downsample`` group gives the transformation
(``ablate.spec.pool``/``strided``/``all_conv``/``conv_pool``), and the dataset gives the
input channels, image size and number of classes. ``build_network`` is what
``hydra.utils.instantiate`` calls with all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ablate import spec

Transform = Callable[[Sequence[spec.Layer]], list[spec.Layer]]
Initialiser = Callable[[nn.Module], None]

PAPER_NAMES = {
    "pool": "Model {m}",
    "stride": "Strided-CNN-{m}",
    "convpool": "ConvPool-CNN-{m}",
    "conv": "All-CNN-{m}",
}


class AllConvNet(nn.Sequential):
    """A plain ``nn.Sequential`` that remembers the spec it was built from."""

    def __init__(self, layers: Sequence[spec.Layer], modules: list[nn.Module], name: str):
        super().__init__(*modules)
        self.spec = list(layers)
        self.name = name

    def extra_repr(self) -> str:
        return self.name


def paper_name(model: str, downsample: str) -> str:
    """The row label the paper's Table 3 uses for this cell (e.g. ``All-CNN-C``)."""
    template = PAPER_NAMES.get(downsample, "{m}-" + downsample)
    return template.format(m=model)


def _module(layer: spec.Layer, in_channels: int, num_classes: int) -> tuple[list[nn.Module], int]:
    kind = layer["type"]
    if kind == "conv":
        conv = nn.Conv2d(
            in_channels,
            layer["out"],
            kernel_size=layer["k"],
            stride=layer.get("stride", 1),
            padding=spec.padding(layer),
        )
        return [conv, nn.ReLU()], layer["out"]
    if kind == "classifier":
        conv = nn.Conv2d(in_channels, num_classes, kernel_size=layer.get("k", 1))
        return [conv, nn.ReLU()], num_classes
    if kind == "maxpool":
        pool = nn.MaxPool2d(
            layer["k"],
            stride=layer.get("stride", 2),
            padding=layer.get("pad", 0),
            ceil_mode=layer.get("ceil_mode", True),
        )
        return [pool], in_channels
    if kind == "dropout":
        return [nn.Dropout(layer["p"])], in_channels
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten()], in_channels


def build_network(
    layers: Sequence[Any],
    transform: Transform,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width: float = 1.0,
    init: Initialiser | None = None,
    name: str = "network",
) -> AllConvNet:
    """Apply the downsampling ``transform`` and ``width`` to the base ``layers`` and build it.

    The input size is checked against the spec before any tensor is made, so a dataset whose
    images are too small fails with the layer that breaks and the smallest size that works.
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
    channels = in_channels
    for layer in derived:
        made, channels = _module(layer, channels, num_classes)
        modules.extend(made)
    network = AllConvNet(derived, modules, name)
    if init is not None:
        network.apply(init)
    return network


def count_parameters(network: nn.Module) -> int:
    """Weights plus biases, the number the paper's tables count."""
    return sum(p.numel() for p in network.parameters())


def map_size_before_average(network: AllConvNet, image_size: int) -> int:
    """Side of the feature map that the global average pools over (6 for the paper's nets)."""
    sizes = spec.spatial_sizes(network.spec, image_size)
    last = max(i for i, layer in enumerate(network.spec) if layer["type"] == "global_avg")
    return sizes[last - 1]
