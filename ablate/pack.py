"""Several seeds of one cell trained as one network: each seed's channels beside the others'.

A small All-CNN leaves a GPU mostly waiting on kernel launches and per-step Python. ``pack``
turns K networks of one spec into one whose every convolution is a grouped convolution with K
groups: seed k owns channels ``k*C .. (k+1)*C`` of every layer, its images enter in its own
channels, and no weight joins two seeds, so the gradient of the sum of the seeds' losses gives
each seed exactly the gradient of its own loss. ReLU and the pools act per channel and stay as
they are. Dropout draws each seed's mask from that seed's own generator, in the shape and order
its own run draws it on a CPU, so there a packed seed repeats its run alone (on CUDA,
``F.dropout``'s fused kernel draws differently: each seed's masks are its own and repeatable,
but not its lone run's); only the order of float operations
inside a grouped convolution differs (losses agree to rounding at first and drift apart slowly,
``tests/test_pack.py``). Grouped convolutions were chosen over ``torch.func.vmap`` of the
networks: vmap's rule for a convolution with batched weights is a grouped convolution too, and
a plain module keeps checkpoints, hooks and ``torch.compile`` as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ablate.network import AllConvNet


class SeedDropout(nn.Module):
    """Dropout on packed channels, each seed's mask from its own generator.

    The mask is drawn as ``torch.nn.functional.dropout`` draws it on a CPU (a Bernoulli draw of
    the input's shape, divided by 1 - p, then multiplied), so a generator in the state of a
    seed's global generator gives that seed its own masks back.
    """

    def __init__(self, p: float, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.p, self.generators = p, list(generators)

    def extra_repr(self) -> str:
        return f"p={self.p}, seeds={len(self.generators)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        masks = []
        for part, generator in zip(x.chunk(len(self.generators), dim=1), self.generators,
                                   strict=True):
            mask = torch.empty(part.shape, dtype=x.dtype, device=x.device)
            masks.append(mask.bernoulli_(1 - self.p, generator=generator).div_(1 - self.p))
        return x * torch.cat(masks, dim=1)


class PackedNetwork(nn.Module):
    """K networks of one spec as one: images ``[K, B, C, H, W]`` in, scores ``[K, B, classes]``
    out (seed k's images and scores at index k)."""

    def __init__(self, body: nn.Sequential, seeds: int) -> None:
        super().__init__()
        self.body, self.seeds = body, seeds
        self.channels_last = False  # the stacked input in channels_last, as the weights are

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, batch = x.shape[:2]
        if k != self.seeds:
            raise ValueError(f"{k} seeds of images for a network packing {self.seeds}")
        stacked = x.transpose(0, 1).reshape(batch, k * x.shape[2], *x.shape[3:])
        if self.channels_last:
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        return self.body(stacked).view(batch, k, -1).transpose(0, 1)

    def seed_rows(self) -> list[tuple[str, int]]:
        """Each parameter of the body, in parameter order, by name (``3.weight``) with the rows
        of it one seed owns (seed k: rows ``k*n .. (k+1)*n``): the one place that knows how
        seeds are laid out, for :meth:`unpack` and for the seeds' own checkpoints."""
        return [(name, parameter.shape[0] // self.seeds)
                for name, parameter in self.body.named_parameters()]

    def unpack(self, networks: Sequence[AllConvNet]) -> None:
        """Copy each seed's weights back into its own network: its checkpoint, predictions and
        record are then those of a plain run."""
        with torch.no_grad():
            for name, rows in self.seed_rows():
                packed = self.body.get_parameter(name)
                for k, network in enumerate(networks):
                    network.get_parameter(name).copy_(packed[k * rows:(k + 1) * rows])


def pack(networks: Sequence[AllConvNet], generators: Sequence[torch.Generator]) -> PackedNetwork:
    """One network training ``networks`` (one spec, each initialised as its seed's run is)
    side by side; ``generators``: each seed's dropout generator, in the state its own run's
    global generator has when training starts."""
    first = networks[0]
    if any(network.spec != first.spec for network in networks):
        raise ValueError("only networks of one spec can be packed (the seeds of one cell)")
    if len(generators) != len(networks):
        raise ValueError(f"{len(generators)} dropout generators for {len(networks)} networks")
    k = len(networks)
    modules: list[nn.Module] = []
    for index, module in enumerate(first):
        if isinstance(module, nn.Conv2d):
            grouped = nn.Conv2d(module.in_channels * k, module.out_channels * k,
                                module.kernel_size, module.stride, module.padding,
                                groups=k, bias=module.bias is not None)
            with torch.no_grad():
                grouped.weight.copy_(torch.cat([network[index].weight for network in networks]))
                if module.bias is not None:
                    grouped.bias.copy_(torch.cat([network[index].bias for network in networks]))
            modules.append(grouped)
        elif isinstance(module, nn.Dropout):
            modules.append(SeedDropout(module.p, generators))
        else:
            modules.append(module)
    return PackedNetwork(nn.Sequential(*modules), k)


def seed_losses(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each seed's mean cross-entropy, ``[K]``; their sum is what a packed step minimises (each
    seed's parameters see only their own term). One ``cross_entropy`` per seed, as its run
    computes it: the same reduction, so the same loss to the last bit on the same scores."""
    return torch.stack([F.cross_entropy(s, y) for s, y in zip(scores, labels, strict=True)])
