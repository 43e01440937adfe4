"""The paper's preprocessing: global contrast normalisation, then ZCA whitening.

Springenberg et al. cite the Maxout paper's recipe (Goodfellow et al., 2013): pylearn2's
``make_cifar10_gcn_whitened.py``, whose constants this module reproduces:

* GCN (``scale=55``, ``subtract_mean=True``, ``use_std=False``, ``sqrt_bias=0``,
  ``min_divisor=1e-8``): each image, as one vector, gets zero mean and an L2 norm of 55, a
  per-value variance of about 1 for 3,072 values (55**2 / 3072 = 0.98). With ``sqrt_bias=0``
  the input's scale does not matter ([0, 1] here, [0, 255] in pylearn2); ``min_divisor`` only
  keeps constant images from dividing by zero.
* ZCA (``filter_bias=0.1``): centre on the training mean, whiten with ``(X.T @ X / N + 0.1 I)
  ** -1/2``. The bias, about a tenth of the average eigenvalue after GCN, damps the near-zero
  eigen-directions (pixel noise) instead of blowing them up: whitened training data has
  variance ``lambda / (lambda + 0.1)`` per eigen-direction.

Both are fitted on the training split only; the covariance and its eigendecomposition in float64
(float32 loses the small eigenvalues), the fitted matrix applied in float32 chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ablate.data.preprocess import FittedState

CHUNK = 4096


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


@dataclass
class GlobalContrastNormalize(FittedState):
    """Per image: subtract its mean, divide by its L2 norm (or std), multiply by ``scale``; each
    image on its own, so ``fit`` has nothing to do."""

    scale: float = 55.0
    sqrt_bias: float = 0.0
    min_divisor: float = 1e-8
    use_std: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=torch.float32)
        flat_out = _rows(out)
        for start in range(0, len(x), CHUNK):
            rows = _rows(x[start : start + CHUNK]).to(torch.float64)
            rows = rows - rows.mean(dim=1, keepdim=True)
            if self.use_std:
                spread = rows.var(dim=1, keepdim=True, correction=1 if rows.shape[1] > 1 else 0)
            else:
                spread = rows.square().sum(dim=1, keepdim=True)
            divisor = (self.sqrt_bias + spread).sqrt() / self.scale
            divisor = torch.where(divisor < self.min_divisor, torch.ones_like(divisor), divisor)
            flat_out[start : start + CHUNK] = rows / divisor
        return out


class ZCAWhiten(FittedState):
    """ZCA whitening with a ``filter_bias`` added to the covariance's eigenvalues."""

    STATE = ("mean", "matrix", "eigenvalues")

    def __init__(self, filter_bias: float = 0.1) -> None:
        if filter_bias < 0:
            raise ValueError(f"filter_bias must be >= 0, got {filter_bias}")
        self.filter_bias = filter_bias
        self.mean: torch.Tensor | None = None
        self.matrix: torch.Tensor | None = None
        self.eigenvalues: torch.Tensor | None = None

    def fit(self, train_x: torch.Tensor) -> None:
        rows = _rows(train_x)
        count, dims = rows.shape
        if count < 2:
            raise ValueError(f"ZCA needs at least 2 training images, got {count}")
        mean = torch.zeros(dims, dtype=torch.float64)
        for start in range(0, count, CHUNK):
            mean += rows[start : start + CHUNK].to(torch.float64).sum(dim=0)
        mean /= count
        covariance = torch.zeros(dims, dims, dtype=torch.float64)
        for start in range(0, count, CHUNK):
            centred = rows[start : start + CHUNK].to(torch.float64) - mean
            covariance.addmm_(centred.T, centred)
        covariance /= count
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # Round-off can leave tiny negative eigenvalues for rank-deficient data (GCN removes
        # one dimension); clamping keeps them at 0 so the bias alone sets their scale.
        eigenvalues = eigenvalues.clamp_min(0.0)
        scale = (eigenvalues + self.filter_bias).rsqrt()
        if not torch.isfinite(scale).all():
            raise ValueError(
                "the training covariance is singular and filter_bias is 0: ZCA is undefined; "
                "use a positive filter_bias (the paper's recipe uses 0.1)")
        self.mean = mean
        self.eigenvalues = eigenvalues
        self.matrix = (eigenvectors * scale) @ eigenvectors.T

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.matrix is None:
            raise RuntimeError("ZCAWhiten.fit must run on the training split first")
        matrix = self.matrix.to(torch.float32)
        out = torch.empty(x.shape, dtype=torch.float32)
        flat_out = _rows(out)
        for start in range(0, len(x), CHUNK):
            centred = (_rows(x[start : start + CHUNK]).to(torch.float64) - self.mean).float()
            flat_out[start : start + CHUNK] = centred @ matrix
        return out


class GCNWhiten:
    """The paper's pipeline (``preprocess=paper``): GCN, then ZCA fitted on GCN'd training data."""

    def __init__(self, scale: float = 55.0, sqrt_bias: float = 0.0, min_divisor: float = 1e-8,
                 filter_bias: float = 0.1) -> None:
        self.gcn = GlobalContrastNormalize(scale=scale, sqrt_bias=sqrt_bias,
                                           min_divisor=min_divisor)
        self.zca = ZCAWhiten(filter_bias=filter_bias)

    def fit(self, train_x: torch.Tensor) -> None:
        self.zca.fit(self.gcn(train_x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.zca(self.gcn(x))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"zca.{key}": value for key, value in self.zca.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.zca.load_state_dict({key[4:]: v for key, v in state.items() if key.startswith("zca.")})
