"""Input preprocessing fitted on the training split only, then applied to every split.

``Standardize`` is the cheap default for small data; the paper's GCN + ZCA lives in
``ablate.data.whiten``. Constructor arguments, stored as plain attributes, are part of the
on-disk cache's key (``ablate.data.cache``).
"""

from __future__ import annotations

from typing import Protocol

import torch


class Preprocessor(Protocol):
    """Fitted on the training split, applied to every split; its fitted state is tensors only,
    so that the on-disk cache can restore it without fitting again."""

    def fit(self, train_x: torch.Tensor) -> None: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


class FittedState:
    """The state methods of a preprocessor whose fitted tensors are the attributes in ``STATE``
    (empty before ``fit``, and for a preprocessor that fits nothing: its ``fit`` does nothing)."""

    STATE: tuple[str, ...] = ()

    def fit(self, train_x: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        values = {name: getattr(self, name, None) for name in self.STATE}
        return {} if any(value is None for value in values.values()) else values

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.STATE:
            setattr(self, name, state[name])


class Identity(FittedState):
    """No preprocessing: images stay in [0, 1]."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Standardize(FittedState):
    """Zero mean and unit variance per channel, with statistics of the training split."""

    STATE = ("mean", "std")

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, train_x: torch.Tensor) -> None:
        self.mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
        self.std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardize.fit must run on the training split first")
        return (x - self.mean) / self.std


def apply_preprocess(preprocess: Preprocessor,
                     *splits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Fit on the first split (training), transform all of them."""
    preprocess.fit(splits[0])
    return tuple(preprocess(x) for x in splits)
