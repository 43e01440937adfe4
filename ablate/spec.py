"""Networks as data: layer specs and the downsampling transformations of the ablation.

A base model is a list of plain dicts (``conf/model/*.yaml``); each downsampling mode is a pure
function from one list to another, deriving Strided-CNN, ConvPool-CNN and All-CNN from the base
model as Table 2 of the paper does for model C. Nothing of torch here.

Layer kinds:

``conv``        ``out`` channels, kernel ``k``, ``stride`` (1), ``pad`` (``same`` or an int);
                always followed by a ReLU, as in the paper.
``maxpool``     kernel ``k``, ``stride``, ``pad`` (0); ``ceil_mode`` (Caffe's rounding, the
                default) keeps 32 -> 16 -> 8; ``ceil_mode: false`` rounds down as torch does.
``lppool``      the same windows as ``maxpool``, each reduced to its p-norm (``p``).
``avgpool``     the same windows, each reduced to its mean over the pixels it covers.
``dropout``     probability ``p``.
``classifier``  1x1 conv to the dataset's number of classes; the paper keeps its ReLU.
``global_avg``  average over the remaining map, giving the class scores.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ablate.errors import SpecError

Layer = dict[str, Any]

KINDS = ("conv", "maxpool", "lppool", "avgpool", "dropout", "classifier", "global_avg")
# Layers that downsample without weights; all share max-pooling's window arithmetic.
POOLS = ("maxpool", "lppool", "avgpool")


def normalise(layers: Iterable[Any]) -> list[Layer]:
    """Copy ``layers`` into plain dicts and check each one, so errors point at the YAML."""
    result = [dict(raw) for raw in layers]
    for index, layer in enumerate(result):
        if layer.get("type") not in KINDS:
            raise SpecError(f"layer {index} has type {layer.get('type')!r}; valid layer types "
                            f"are {', '.join(KINDS)}")
    return result


def _downsampling_steps(layers: Sequence[Layer]) -> list[int]:
    steps = [i for i, layer in enumerate(layers) if layer["type"] == "maxpool"]
    if not steps:
        raise SpecError("the base model has no max-pooling step to ablate")
    return steps


def _conv_before(layers: Sequence[Layer], index: int) -> int:
    for j in range(index - 1, -1, -1):
        if layers[j]["type"] == "conv":
            return j
    raise SpecError(f"the max-pool at layer {index} has no convolution before it")


def pool(layers: Sequence[Layer]) -> list[Layer]:
    """The base model itself ("Model X"): 3x3 max-pooling with stride 2."""
    return copy.deepcopy(list(layers))


def _repool(layers: Sequence[Layer], **fields: Any) -> list[Layer]:
    """Each max-pool kept where it is, with the same windows, but another reduction."""
    result = copy.deepcopy(list(layers))
    for index in _downsampling_steps(result):
        result[index].update(fields)
    return result


def lp_pool(layers: Sequence[Layer], p: float = 2.0) -> list[Layer]:
    """LP-pooling instead of each max-pool: (sum over the 3x3 window of |x|^p)^(1/p), stride 2.

    The paper argues that pooling is a feature-wise convolution whose activation is this p-norm,
    max-pooling being p = infinity; sweeping p walks from the sum (p = 1) towards max-pooling
    with the parameter count of Model X (a p-norm has no weights).
    """
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p < math.inf:
        raise SpecError(f"LP-pooling needs a positive, finite p (downsample.p), got {p!r}; "
                        "max-pooling (p = infinity) is downsample=pool")
    return _repool(layers, type="lppool", p=p)


def avg_pool(layers: Sequence[Layer]) -> list[Layer]:
    """Average pooling instead of each max-pool: the p = 1 norm divided by the window's size."""
    return _repool(layers, type="avgpool")


def strided(layers: Sequence[Layer]) -> list[Layer]:
    """Strided-CNN-X: each max-pool is removed and the conv just before it gets its stride."""
    result = copy.deepcopy(list(layers))
    for index in reversed(_downsampling_steps(result)):
        pool_layer = result.pop(index)
        result[_conv_before(result, index)]["stride"] = pool_layer.get("stride", 2)
    return result


def all_conv(layers: Sequence[Layer]) -> list[Layer]:
    """All-CNN-X: each max-pool becomes a conv of the same size and stride, same channels.

    The conv keeps the pool's output size. A pool with Caffe's rounding (``ceil_mode``, the
    default: 32 -> 16 -> 8) is matched by ``same`` padding; a floor-rounding pool
    (``ceil_mode: false``, the ImageNet model's 55 -> 27 -> 13 -> 6) by the pool's own padding,
    where ``same`` would give 28, 14, 7.
    """
    result = copy.deepcopy(list(layers))
    for index in _downsampling_steps(result):
        pool_layer = result[index]
        channels = result[_conv_before(result, index)]["out"]
        pad = "same" if pool_layer.get("ceil_mode", True) else pool_layer.get("pad", 0)
        result[index] = {"type": "conv", "out": channels, "k": pool_layer.get("k", 3),
                         "stride": pool_layer.get("stride", 2), "pad": pad}
    return result


def conv_pool(layers: Sequence[Layer]) -> list[Layer]:
    """ConvPool-CNN-X: a 3x3 stride-1 conv inserted before each max-pool (All-CNN's params)."""
    result = copy.deepcopy(list(layers))
    for index in reversed(_downsampling_steps(result)):
        pool_layer = result[index]
        channels = result[_conv_before(result, index)]["out"]
        extra = {"type": "conv", "out": channels, "k": pool_layer.get("k", 3), "pad": "same"}
        result.insert(index, extra)
    return result


def padding(layer: Layer) -> int:
    """``same`` padding keeps the size at stride 1 and halves it (rounding up) at stride 2."""
    pad = layer.get("pad", "same")
    return layer["k"] // 2 if pad == "same" else int(pad)


def _window(layer: Layer) -> tuple[int, int, int]:
    """``(kernel, stride, padding)`` of the window a layer slides; ``(1, 1, 0)`` if none."""
    kind = layer["type"]
    if kind == "conv":
        return layer["k"], layer.get("stride", 1), padding(layer)
    if kind in POOLS:
        return layer["k"], layer.get("stride", 2), layer.get("pad", 0)
    return (layer.get("k", 1) if kind == "classifier" else 1), 1, 0


def output_size(layer: Layer, size: int) -> int:
    """Spatial size after ``layer`` for a square input of ``size`` (the rules of torch)."""
    if layer["type"] == "global_avg":
        return 1
    kernel, stride, pad = _window(layer)
    span = size + 2 * pad - kernel
    ceil = layer["type"] in POOLS and layer.get("ceil_mode", True)
    return (math.ceil(span / stride) if ceil else span // stride) + 1


def spatial_sizes(layers: Sequence[Layer], size: int) -> list[int]:
    """Map size after every layer; fails with the first layer that gets nothing to work on."""
    sizes = []
    for index, layer in enumerate(layers):
        kernel, _, pad = _window(layer)
        if size + 2 * pad < kernel:
            raise SpecError(
                f"layer {index} ({describe(layer)}) gets a {size}x{size} map, smaller than its "
                f"{kernel}x{kernel} kernel")
        size = output_size(layer, size)
        sizes.append(size)
    return sizes


def minimum_input_size(layers: Sequence[Layer]) -> int:
    """Smallest square input the network takes (every map ``spatial_sizes`` allows is 1x1+)."""
    for size in range(1, 4096):
        with contextlib.suppress(SpecError):
            spatial_sizes(layers, size)
            return size
    raise SpecError("no input size up to 4096 fits this network")


def scale_width(layers: Sequence[Layer], width: float) -> list[Layer]:
    """Multiply every hidden conv's channels by ``width`` for cheap runs (classifier kept)."""
    if width <= 0:
        raise SpecError(f"width must be positive, got {width}")
    result = copy.deepcopy(list(layers))
    for layer in result:
        if layer["type"] == "conv":
            layer["out"] = max(1, int(round(layer["out"] * width)))
    return result


def describe(layer: Layer) -> str:
    """One line per layer, in the words of the paper's tables."""
    kind = layer["type"]
    if kind == "conv":
        text = f"{layer['k']}x{layer['k']} conv {layer['out']} ReLU"
        stride = layer.get("stride", 1)
        return text + (f", stride {stride}" if stride != 1 else "")
    if kind == "classifier":
        return f"{layer.get('k', 1)}x{layer.get('k', 1)} conv num_classes ReLU"
    if kind in POOLS:
        how = {"maxpool": "max-pooling", "avgpool": "average pooling"}.get(kind) or (
            f"LP-pooling (p = {layer['p']:g})")
        return f"{layer['k']}x{layer['k']} {how}, stride {layer.get('stride', 2)}"
    if kind == "dropout":
        return f"dropout {layer['p']:g}"
    return "global averaging, softmax"


def format_spec(layers: Sequence[Layer], size: int | None = None) -> str:
    """The spec as a table, with map sizes when ``size`` is given."""
    sizes = spatial_sizes(layers, size) if size is not None else [None] * len(layers)
    lines = []
    for layer, out in zip(layers, sizes, strict=True):
        suffix = f"  -> {out}x{out}" if out is not None and layer["type"] != "dropout" else ""
        lines.append(f"  {describe(layer)}{suffix}")
    return "\n".join(lines)
