"""The paper's GCN + ZCA: per-image normalisation, whitening fitted on the training split only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ablate.data.preprocess import apply_preprocess
from ablate.data.whiten import GCNWhiten, GlobalContrastNormalize, ZCAWhiten

CONF = Path(__file__).resolve().parents[1] / "conf"


def correlated_images(count: int, seed: int = 0, shape=(3, 4, 4)) -> torch.Tensor:
    """Images in [0, 1] whose pixels are strongly correlated, like natural images."""
    generator = torch.Generator().manual_seed(seed)
    dims = int(np.prod(shape))
    mixing = torch.randn(dims, dims, generator=generator) * 0.05 + 0.1
    latent = torch.rand(count, dims, generator=generator)
    x = latent @ mixing
    x = (x - x.min()) / (x.max() - x.min())
    return x.reshape(count, *shape)


def covariance(x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(len(x), -1).double()
    rows = rows - rows.mean(dim=0)
    return rows.T @ rows / len(rows)


def test_gcn_gives_each_image_zero_mean_and_norm_55():
    x = correlated_images(50)
    out = GlobalContrastNormalize()(x).reshape(50, -1).double()
    assert out.mean(dim=1).abs().max() < 1e-5
    assert torch.allclose(out.norm(dim=1), torch.full((50,), 55.0, dtype=torch.float64))


def test_gcn_matches_the_pylearn2_formula_and_ignores_input_scale():
    x = correlated_images(20)
    rows = x.reshape(20, -1).numpy().astype(np.float64)
    centred = rows - rows.mean(axis=1, keepdims=True)
    reference = centred / (np.sqrt((centred**2).sum(axis=1)) / 55.0)[:, None]
    gcn = GlobalContrastNormalize(scale=55.0, sqrt_bias=0.0, min_divisor=1e-8)
    assert np.allclose(gcn(x).reshape(20, -1).numpy(), reference, atol=1e-4)
    assert torch.allclose(gcn(x * 255.0), gcn(x), atol=1e-4)


def test_gcn_leaves_constant_images_finite():
    out = GlobalContrastNormalize()(torch.full((2, 3, 4, 4), 0.5))
    assert torch.equal(out, torch.zeros_like(out))


def test_zca_whitened_training_covariance_is_identity():
    x = correlated_images(4000)
    zca = ZCAWhiten(filter_bias=1e-8)
    zca.fit(x)
    assert zca.matrix.dtype == torch.float64
    assert torch.allclose(zca.matrix, zca.matrix.T)  # ZCA, not PCA: a symmetric transform
    assert torch.allclose(covariance(zca(x)), torch.eye(48, dtype=torch.float64), atol=1e-3)


def test_filter_bias_shrinks_each_eigen_direction_to_lambda_over_lambda_plus_bias():
    x = correlated_images(4000)
    zca = ZCAWhiten(filter_bias=0.1)
    zca.fit(x)
    found = torch.linalg.eigvalsh(covariance(zca(x)))
    expected = zca.eigenvalues / (zca.eigenvalues + 0.1)
    assert torch.allclose(found, expected.sort().values, atol=1e-4)


def test_paper_pipeline_whitens_all_but_the_direction_gcn_removes():
    x = correlated_images(4000)
    paper = GCNWhiten(filter_bias=1e-8)
    paper.fit(x)
    dims = 48
    # GCN makes every image zero-mean, so no variance is left along the constant vector;
    # ZCA whitens everything orthogonal to it.
    projector = torch.eye(dims, dtype=torch.float64) - torch.full((dims, dims), 1.0 / dims).double()
    assert torch.allclose(covariance(paper(x)), projector, atol=2e-3)


def test_whitening_is_fitted_on_the_training_split_only():
    train, test = correlated_images(3000, seed=1), correlated_images(500, seed=2) * 0.5 + 0.3
    paper = GCNWhiten()
    out_train, out_test = apply_preprocess(paper, train, test)
    own = GCNWhiten()
    own.fit(test)
    assert not torch.allclose(own(test), out_test, atol=1e-2)
    reference = GCNWhiten()
    reference.fit(train)
    assert torch.allclose(reference(test), out_test)
    assert torch.allclose(out_train.reshape(3000, -1).mean(dim=0), torch.zeros(48), atol=1e-4)


def test_state_dict_restores_the_fitted_transform():
    x = correlated_images(500)
    fitted = GCNWhiten()
    fitted.fit(x)
    restored = GCNWhiten()
    restored.load_state_dict(fitted.state_dict())
    assert torch.equal(restored(x), fitted(x))


def test_unfitted_zca_and_singular_unbiased_zca_fail_clearly():
    with pytest.raises(RuntimeError, match="fit"):
        ZCAWhiten()(torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="filter_bias"):
        ZCAWhiten(filter_bias=0.0).fit(torch.rand(5, 3, 4, 4))  # 5 images, 48 dimensions


def test_paper_yaml_states_the_maxout_constants():
    cfg = OmegaConf.load(CONF / "preprocess" / "paper.yaml")
    paper = instantiate(cfg.transform)
    assert cfg.name == "paper" and isinstance(paper, GCNWhiten)
    assert paper.gcn.scale == 55.0 and paper.gcn.sqrt_bias == 0.0
    assert paper.zca.filter_bias == 0.1
