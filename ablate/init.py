"""Weight initialisation, a choice the paper does not state (``conf/init/*.yaml``).

Reimplementations that matched the paper used Xavier/Glorot (Caffe's ``xavier`` filler) or a
Gaussian with std 0.05; PyTorch's default (Kaiming-uniform with a=sqrt(5)) is known to stall
at chance with the paper's larger learning rates. Each function is applied module by module
through ``nn.Module.apply`` and leaves non-conv modules alone.
"""

from __future__ import annotations

from torch import nn


def xavier_uniform(module: nn.Module, gain: float = 1.0) -> None:
    """Glorot-uniform weights, zero biases: the default, as in the Caffe reproduction."""
    if isinstance(module, nn.Conv2d):
        nn.init.xavier_uniform_(module.weight, gain=gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def gaussian(module: nn.Module, std: float = 0.05) -> None:
    """N(0, std^2) weights, zero biases: the neon reproduction's choice."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def kaiming_normal(module: nn.Module) -> None:
    """He-normal weights for ReLU nets, zero biases."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def torch_default(module: nn.Module) -> None:
    """Keep PyTorch's own initialisation (for comparison only)."""
