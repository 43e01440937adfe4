"""What every training-speed benchmark shares: All-CNN-C, synthetic batches, a plain timed loop
and the variants (precision, memory format, compilation) it runs in.

Torch only, no Lightning: the GPU benchmark starts up to eight worker processes at once to
measure packing, and importing Lightning would add seconds to each of them. The loop is the
reference the Lightning stack is compared with (``ablate.bench.overhead``), so it does only what
a training step must: forward, loss, backward, optimiser step.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import yaml

from ablate import spec
from ablate.data.batches import TensorBatches
from ablate.init import xavier_uniform
from ablate.network import AllConvNet, build_network


def all_cnn_c(width: float, size: int, channels: int) -> AllConvNet:
    """The paper's All-CNN-C from ``conf/model/C.yaml``, with the same weights on every call."""
    model = importlib.resources.files("ablate.conf") / "model" / "C.yaml"
    layers = yaml.safe_load(model.read_text())["layers"]
    torch.manual_seed(0)
    return build_network(layers, spec.all_conv, channels, size, 10, width=width,
                         init=xavier_uniform, name="All-CNN-C")


def synthetic_batches(count: int, size: int, channels: int, batch: int,
                      device: torch.device | str = "cpu") -> TensorBatches:
    """Random images on ``device``: speed does not depend on pixel values, only on shapes.

    ``count`` should be a multiple of ``batch``: a smaller last batch would make
    ``torch.compile`` compile the network a second time, inside the timed steps.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, channels, size, size, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return TensorBatches(images.to(device), labels.to(device), batch, shuffle=True, seed=0)


def sgd(parameters) -> torch.optim.Optimizer:
    """The paper's optimiser (SGD with momentum and weight decay); its cost is what matters."""
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=0.001)


def synchronize(device: torch.device) -> None:
    """Wait for the device: CUDA runs asynchronously, so a clock read without this stops when
    the last kernel is queued, not when it has run."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[torch.Tensor, torch.Tensor], None], batches: TensorBatches,
                warmup: int, steps: int, device: torch.device) -> float:
    """Seconds of ``steps`` calls of ``step`` on the next batches, after ``warmup`` untimed ones,
    with the device waited for at both ends."""
    done, start = 0, 0.0
    while done < warmup + steps:
        for x, y in batches:
            if done == warmup:
                synchronize(device)
                start = time.perf_counter()
            step(x, y)
            done += 1
            if done == warmup + steps:
                break
    synchronize(device)
    return time.perf_counter() - start


def plain_seconds(network: torch.nn.Module, batches: TensorBatches, warmup: int, steps: int,
                  autocast: torch.dtype | None = None, channels_last: bool = False) -> float:
    """Seconds of ``steps`` training steps after ``warmup`` untimed ones (a fresh optimiser).

    ``autocast`` and ``channels_last`` do what Lightning's ``bf16-mixed`` precision and this
    project's ``Classifier`` do: autocast around forward and loss only, inputs converted to
    channels_last before the forward pass (the network's weights must be converted by the caller).
    """
    optimizer = sgd(network.parameters())
    network.train()
    device = next(network.parameters()).device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_steps(step, batches, warmup, steps, device)


@dataclass(frozen=True)
class Variant:
    """One way of running the same training step."""

    name: str
    autocast: torch.dtype | None
    channels_last: bool
    compile: bool

    def network(self, device: torch.device, width: float, size: int,
                channels: int) -> torch.nn.Module:
        """All-CNN-C on ``device`` in this variant's memory format, compiled if it compiles."""
        network = all_cnn_c(width, size, channels).to(device)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        if not self.compile:
            return network
        # A fresh compilation per measurement: reusing one across batch sizes would make dynamo
        # recompile with a dynamic batch dimension (slower kernels) inside the timed steps.
        torch._dynamo.reset()
        return torch.compile(network)

    def seconds(self, network: torch.nn.Module, batches: TensorBatches, warmup: int,
                steps: int) -> float:
        """:func:`plain_seconds` in this variant's arithmetic."""
        return plain_seconds(network, batches, warmup, steps, self.autocast, self.channels_last)


VARIANTS = (Variant("fp32 eager", None, False, False),
            Variant("bf16 + channels_last", torch.bfloat16, True, False),
            Variant("bf16 + channels_last + compile", torch.bfloat16, True, True))
VARIANT_BY_NAME = {variant.name: variant for variant in VARIANTS}
