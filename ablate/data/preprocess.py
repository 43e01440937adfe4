"""Input preprocessing fitted on the training split only, then applied to every split.

A preprocessor has ``fit(train_x)`` and ``__call__(x)``; ``apply_preprocess`` runs it over the
three splits. ``Standardize`` (per-channel mean and std) is the cheap default for small data; the
paper's GCN + ZCA lives in ``ablate.data.whiten``.

Preprocessors may also offer ``state_dict()`` / ``load_state_dict(state)`` (tensors only), so that
the on-disk cache (``ablate.data.cache``) can restore a fitted transform without refitting. Their
constructor arguments, stored as plain attributes, are part of the cache key.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Preprocessor(Protocol):
    def fit(self, train_x: torch.Tensor) -> None: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class Identity:
    """No preprocessing: images stay in [0, 1]."""

    def fit(self, train_x: torch.Tensor) -> None:
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        return None


class Standardize:
    """Zero mean and unit variance per channel, with statistics of the training split."""

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

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.mean is None or self.std is None:
            return {}
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.std = state["mean"], state["std"]


def apply_preprocess(
    preprocess: Preprocessor, *splits: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Fit on the first split (training), transform all of them."""
    preprocess.fit(splits[0])
    return tuple(preprocess(x) for x in splits)
