"""Hidden units: which layer is which, where a unit looks in the image, what excites it most.

Layers are named after the convolutions of the spec, counted from the input: ``conv1`` is the
first conv, and so on (the classifier and the downsampling convs of All-CNN included, so the
names follow the printed spec of each run). A unit is one channel of that conv's ReLU output;
its strongest activation over the map picks the image position to reconstruct from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ablate import spec as spec_lib
from ablate.visualize.loading import VisualizeError

CONV_KINDS = ("conv", "classifier")
# Roles a layer can be chosen by, so that one command works for runs with different specs.
ROLES = ("middle", "last3x3")


@dataclass(frozen=True)
class Field:
    """Receptive field of one layer's units, in input pixels.

    A unit at map position (i, j) sees the square of side ``size`` centred on
    ``start + i * jump``, ``start + j * jump`` (centres may be fractional for even kernels).
    """

    size: int
    jump: int
    start: float

    def low(self, index: int) -> int:
        """The first row (or column) of the field of the unit at map row (column) ``index``."""
        return int(round(self.start + index * self.jump - (self.size - 1) / 2))

    def box(self, row: int, col: int, image_size: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right), half-open, of the unit's field clipped to the image."""
        top, left = self.low(row), self.low(col)
        return (max(0, top), min(image_size, top + self.size), max(0, left),
                min(image_size, left + self.size))

    def crop(self, x: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """The part of ``x`` (C, H, W) the unit sees, as a square of the field's side.

        Where the field reaches past the image the square is NaN (drawn as "outside"), so every
        crop of a layer has the same scale. A field at least as large as the image gives the
        whole image.
        """
        channels, height, width = x.shape
        if self.size >= max(height, width):
            return x.clone()
        top, bottom, left, right = self.box(row, col, height)
        low_row, low_col = self.low(row), self.low(col)
        canvas = torch.full((channels, self.size, self.size), float("nan"), dtype=x.dtype)
        canvas[:, top - low_row: bottom - low_row, left - low_col: right - low_col] = (
            x[:, top:bottom, left:right])
        return canvas

    def crops(self, pictures: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """:meth:`crop` of each picture (N, C, H, W) at its own unit position."""
        return torch.stack([self.crop(picture, int(row), int(col))
                            for picture, row, col in zip(pictures, rows, cols, strict=True)])


def conv_layers(layers: Sequence[spec_lib.Layer]) -> dict[str, int]:
    """``conv<n>`` -> index into the spec, for every conv (classifier included)."""
    indices = [i for i, layer in enumerate(layers) if layer["type"] in CONV_KINDS]
    return {f"conv{n}": index for n, index in enumerate(indices, start=1)}


def layer_by_role(layers: Sequence[spec_lib.Layer], role: str) -> str:
    """``last3x3``: the last 3x3 conv (the head's); ``middle``: the middle one of the 3x3 convs.

    In both Model C and All-CNN-C ``middle`` is the first conv after the first downsampling
    step, so the same role names comparable layers of different variants.
    """
    names = conv_layers(layers)
    threes = [name for name, index in names.items()
              if layers[index]["type"] == "conv" and layers[index].get("k") == 3]
    if not threes:
        raise VisualizeError("the network has no 3x3 conv; choose a layer by name instead")
    if role == "last3x3":
        return threes[-1]
    if role == "middle":
        return threes[len(threes) // 2]
    raise VisualizeError(f"unknown layer role {role!r}; valid roles are {', '.join(ROLES)}")


def resolve_layer(layers: Sequence[spec_lib.Layer], choice: str, run: str) -> str:
    """A layer given by name (``conv4``) or role (``middle``), checked against this run."""
    if choice in ROLES:
        return layer_by_role(layers, choice)
    names = conv_layers(layers)
    if choice not in names:
        described = ", ".join(f"{name} ({spec_lib.describe(layers[i])})"
                              for name, i in names.items())
        raise VisualizeError(
            f"{run} has no layer {choice!r}; valid layers are {', '.join(ROLES)} or one of: "
            f"{described}")
    return choice


def receptive_fields(layers: Sequence[spec_lib.Layer]) -> list[Field]:
    """The field of every layer's output (convs, pools; dropout and averaging change nothing).

    The usual recursion: a layer of kernel k, stride s, padding p grows the field by
    (k - 1) * jump, multiplies the jump by s, and moves the first centre by
    ((k - 1) / 2 - p) * jump. Caffe-style rounding up of max-pooling adds positions at the end
    only, so it leaves the centres where they are.
    """
    size, jump, start = 1, 1, 0.0
    fields = []
    for layer in layers:
        kind = layer["type"]
        if kind in ("conv", "classifier", *spec_lib.POOLS):
            k = layer.get("k", 1)
            stride = layer.get("stride", 2 if kind in spec_lib.POOLS else 1)
            pad = spec_lib.padding(layer) if kind == "conv" else layer.get("pad", 0)
            size += (k - 1) * jump
            start += ((k - 1) / 2 - pad) * jump
            jump *= stride
        fields.append(Field(size, jump, start))
    return fields


def trunk(network: nn.Sequential, layer_index: int) -> nn.Sequential:
    """The network from the input up to and including the ReLU of spec layer ``layer_index``.

    Found by counting ReLU modules: in ``ablate.network`` each conv and the classifier is
    followed by exactly one, in spec order, so the n-th ReLU closes the n-th conv.
    """
    layers = network.spec
    if layers[layer_index]["type"] not in CONV_KINDS:
        raise VisualizeError(f"spec layer {layer_index} is a {layers[layer_index]['type']}, "
                             "not a conv")
    wanted = sum(1 for layer in layers[: layer_index + 1] if layer["type"] in CONV_KINDS)
    relus = [position for position, module in enumerate(network) if isinstance(module, nn.ReLU)]
    if len(relus) < wanted:
        raise VisualizeError(f"network has {len(relus)} ReLUs but its spec needs {wanted}")
    return nn.Sequential(*list(network)[: relus[wanted - 1] + 1])


@dataclass(frozen=True)
class TopImages:
    """For one unit: the test images that excite it most, and where in the map they do."""

    indices: torch.Tensor
    values: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor


def most_active_units(maps: torch.Tensor, count: int) -> list[int]:
    """The channels with the largest mean (over images) of their strongest activation.

    A default that avoids the dead units a small, briefly trained network has many of; ties go
    to the lower channel, so the choice is deterministic.
    """
    strength = maps.amax(dim=(2, 3)).mean(dim=0)
    return torch.argsort(strength, descending=True, stable=True)[:count].tolist()


def top_images(maps: torch.Tensor, channel: int, k: int) -> TopImages:
    """The ``k`` images with the largest maximum of ``channel`` (ties: lower image index)."""
    per_image = maps[:, channel].flatten(1)
    peak, where = per_image.max(dim=1)
    chosen = torch.argsort(peak, descending=True, stable=True)[:k]
    width = maps.shape[-1]
    return TopImages(indices=chosen, values=peak[chosen], rows=where[chosen] // width,
                     cols=where[chosen] % width)
