"""Input attributions of the paper's three backward rules, through Captum.

For a ReLU with forward input f and arriving gradient R (paper, "Guided backpropagation"):
``backprop`` passes [f > 0] R, ``deconvnet`` passes [R > 0] R, ``guided`` passes
[f > 0] [R > 0] R; everything else is ordinary backprop. Captum implements these as
``Saliency`` (with ``abs=False``: the plain signed gradient), ``Deconvolution`` and
``GuidedBackprop``, all of which rewrite the gradients of ``nn.ReLU`` *modules*: a network
that calls ``F.relu``, or reuses one ReLU module, or runs it in place, is silently wrong, so
:func:`check_relus` refuses such networks first.

What is differentiated is either a class score (the network's output before the softmax:
classifier conv, its ReLU, global average) or one hidden unit: one channel of a conv layer's
ReLU output at one position (:class:`UnitActivation`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

METHODS = ("backprop", "deconvnet", "guided")
METHOD_TITLES = {"backprop": "backprop", "deconvnet": "deconvnet", "guided": "guided backprop"}


def check_relus(network: nn.Module) -> None:
    """Fail unless every ReLU is its own module and not in place, as Captum's hooks need."""
    relus = [m for _, m in network.named_modules(remove_duplicate=False)
             if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(
            f"{type(network).__name__} has no nn.ReLU modules; the backward rules rewrite ReLU "
            "gradients, so ReLUs must be modules (not F.relu)")
    if len({id(m) for m in relus}) != len(relus):
        raise ValueError("one nn.ReLU module is used at several places; give each its own")
    inplace = [i for i, m in enumerate(relus) if m.inplace]
    if inplace:
        raise ValueError(
            f"ReLU modules {inplace} run in place, which breaks backward hooks; build them with "
            "nn.ReLU() (inplace=False)")


def attribute(model: nn.Module, inputs: torch.Tensor, method: str,
              target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of ``model``'s output (``target`` column, if given) w.r.t. ``inputs``.

    ``model`` must be in eval mode (dropout off): the maps are of the network that is tested.
    The result has the shape of ``inputs`` and keeps its sign (``Saliency`` with ``abs=False``).
    """
    from captum.attr import Deconvolution, GuidedBackprop, Saliency

    explainers = {"backprop": Saliency, "deconvnet": Deconvolution, "guided": GuidedBackprop}
    if method not in explainers:
        raise ValueError(f"unknown attribution method {method!r}; valid methods are {METHODS}")
    check_relus(model)
    if model.training:
        raise ValueError("the model is in training mode (dropout on); call model.eval() first")
    explainer = explainers[method](model)
    kwargs = {"abs": False} if method == "backprop" else {}
    with warnings.catch_warnings():  # Captum announces its ReLU hooks on every call
        warnings.simplefilter("ignore", UserWarning)
        result = explainer.attribute(inputs.detach().clone(), target=target, **kwargs)
    return result.detach()


class UnitActivation(nn.Module):
    """One unit's activation per image: ``channel`` of ``trunk(x)`` at a per-image position.

    ``trunk`` ends with the ReLU of the layer the unit belongs to, so the rules apply to that
    ReLU too; positions are fixed per image (the argmax found beforehand), which turns "the
    gradient of the strongest activation" into a plain gradient of a scalar per image.
    """

    def __init__(self, trunk: nn.Module, channel: int, rows: torch.Tensor,
                 cols: torch.Tensor) -> None:
        super().__init__()
        self.trunk = trunk
        self.channel = channel
        self.register_buffer("rows", rows.long(), persistent=False)
        self.register_buffer("cols", cols.long(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.trunk(x)
        batch = torch.arange(maps.shape[0], device=maps.device)
        return maps[batch, self.channel, self.rows, self.cols]


def unit_attributions(trunk: nn.Module, channel: int, inputs: torch.Tensor, rows: torch.Tensor,
                      cols: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reconstructions of one unit from each image: its gradient under deconvnet and guided."""
    unit = UnitActivation(trunk, channel, rows, cols).eval()
    return {method: attribute(unit, inputs, method) for method in ("deconvnet", "guided")}
