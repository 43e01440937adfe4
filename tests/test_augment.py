"""Batched augmentation: a flip is a flip, shifts stay within 5 px, the large one is geometric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ablate.data.augment import FlipTranslate, LargeAugment
from ablate.data.batches import TensorBatches
from ablate.data.module import TensorDataModule
from ablate.data.preprocess import Identity
from ablate.data.splits import ImageSplits

CONF = Path(__file__).resolve().parents[1] / "conf"


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(count: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """Values in [1, 2]: never zero, so zero fill is always visible."""
    return 1.0 + torch.rand(count, 3, size, size, generator=generator(seed))


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: move the content down by dy and right by dx, zeros coming in."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def find_shift(original: torch.Tensor, out: torch.Tensor, limit: int) -> tuple[int, int] | None:
    matches = [
        (dy, dx)
        for dy in range(-limit - 1, limit + 2)
        for dx in range(-limit - 1, limit + 2)
        if torch.equal(out, shifted(original, dy, dx))
    ]
    return matches[0] if len(matches) == 1 else None


def test_a_flip_is_a_left_right_mirror():
    x = images(200)
    out = FlipTranslate(max_shift=0)(x, generator())
    flipped = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, x, strict=True)]
    kept = [bool(torch.equal(o, i)) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140


def test_translations_are_integer_shifts_within_5_px_with_zero_fill():
    x = images(300)
    out = FlipTranslate(max_shift=5, flip=False)(x, generator())
    shifts = [find_shift(i, o, 5) for i, o in zip(x, out, strict=True)]
    assert None not in shifts
    assert all(abs(dy) <= 5 and abs(dx) <= 5 for dy, dx in shifts)
    assert {dy for dy, _ in shifts} == set(range(-5, 6))
    assert {dx for _, dx in shifts} == set(range(-5, 6))


def test_flip_translate_is_a_shift_of_the_image_or_of_its_mirror():
    x = images(100, seed=1)
    out = FlipTranslate(max_shift=5)(x, generator(3))
    for original, result in zip(x, out, strict=True):
        found = find_shift(original, result, 5) or find_shift(original.flip(-1), result, 5)
        assert found is not None
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, images(100, seed=1))  # the input batch is not modified


def test_augmentation_is_reproducible_from_the_generator_seed():
    x = images(64)
    augment = FlipTranslate()
    assert torch.equal(augment(x, generator(7)), augment(x, generator(7)))
    assert not torch.equal(augment(x, generator(7)), augment(x, generator(8)))


def test_tensor_batches_apply_it_per_batch_and_replay_an_epoch():
    x, y = images(50), torch.arange(50)
    batches = TensorBatches(x, y, 16, shuffle=True, seed=1, epoch=lambda: 0,
                            augment=FlipTranslate())
    first, second = list(batches), list(batches)
    assert [len(b) for b, _ in first] == [16, 16, 16, 2]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second, strict=True))


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cut_from_the_prepared_set_equal_augmenting_each_batch(shuffle):
    """The fused path (prepare once, select per batch) is the per-batch transform, exactly."""
    x, y = images(70, seed=4), torch.arange(70)
    augment = FlipTranslate()

    def per_batch(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return augment(batch, gen)  # a plain callable: TensorBatches cannot fuse it

    fused = TensorBatches(x, y, 32, shuffle=shuffle, seed=3, epoch=lambda: 2, augment=augment)
    plain = TensorBatches(x, y, 32, shuffle=shuffle, seed=3, epoch=lambda: 2, augment=per_batch)
    assert fused._prepared is not None and plain._prepared is None
    for (xa, ya), (xb, yb) in zip(fused, plain, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for xb, yb in fused:  # and every image is still a shifted (mirrored) copy of its source
        for image, label in zip(xb, yb, strict=True):
            source = x[label]
            assert find_shift(source, image, 5) or find_shift(source.flip(-1), image, 5)


def still(**overrides) -> LargeAugment:
    settings = dict(scale=(1.0, 1.0), rotation=0.0, translate=0.0, flip=False,
                    contrast=(1.0, 1.0), channel_gain=0.0, brightness=0.0)
    settings.update(overrides)
    return LargeAugment(**settings)


def test_large_places_images_on_a_configurable_canvas():
    x = images(6)
    augment = LargeAugment(size=126)
    out = augment(x, generator())
    assert out.shape == (6, 3, 126, 126) and torch.isfinite(out).all()
    # Plain bilinear upsampling, except in the outermost half input pixel (about 2 canvas
    # pixels), which grid_sample blends with the zero fill instead of repeating the edge.
    expected = F.interpolate(x, size=(126, 126), mode="bilinear", align_corners=False)
    inner = (..., slice(3, -3), slice(3, -3))
    assert torch.allclose(augment.eval_transform(x)[inner], expected[inner], atol=1e-5)
    assert torch.allclose(still(size=126)(x, generator()), augment.eval_transform(x), atol=1e-5)


def test_large_flips_exactly_and_scales_about_the_centre():
    x = images(40)
    out = still(size=32, flip=True)(x, generator())
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x, strict=True)]
    kept = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 5 < sum(flipped) < 35
    half = still(size=32, scale=(0.5, 0.5))(x, generator())
    border = torch.ones(32, 32, dtype=torch.bool)
    border[7:25, 7:25] = False  # the image now covers the centre 16x16 (plus a blurred edge)
    assert half[:, :, border].abs().max() == 0
    assert half[:, :, 9:23, 9:23].min() >= 1.0


def test_large_colour_changes_are_per_image():
    x = images(30)
    out = still(size=32, contrast=(0.5, 2.0), channel_gain=0.2, brightness=0.2)(x, generator())
    ratio = (out - out.mean(dim=(2, 3), keepdim=True)).std(dim=(2, 3)) / (
        x - x.mean(dim=(2, 3), keepdim=True)
    ).std(dim=(2, 3))
    assert ratio.min() >= 0.5 * 0.8 - 1e-4 and ratio.max() <= 2.0 * 1.2 + 1e-4
    assert ratio.std() > 0.05


@pytest.mark.parametrize("name, kind", [("flip_translate", FlipTranslate),
                                        ("large", LargeAugment)])
def test_augmentation_yaml_builds_the_transform(name, kind):
    cfg = OmegaConf.load(CONF / "augmentation" / f"{name}.yaml")
    assert cfg.name == name
    augment = instantiate(cfg.transform)
    assert isinstance(augment, kind)
    x = images(4)
    assert augment(x, generator()).shape[:2] == (4, 3)
    if kind is FlipTranslate:
        assert augment.max_shift == 5 and augment.flip
    else:
        assert augment.size == 126


def test_data_module_puts_evaluation_images_on_the_large_canvas():
    def source() -> ImageSplits:
        return ImageSplits("tiny", images(20), torch.arange(20) % 10, images(6, seed=1),
                           torch.arange(6), 10)

    data = TensorDataModule(source, channels=3, image_size=32, num_classes=10, batch_size=8,
                            eval_batch_size=4, val_size=4, preprocess=Identity(),
                            augment=LargeAugment(size=40))
    data.setup()
    assert data.tensors["train"][0].shape == (16, 3, 32, 32)  # augmented per batch
    assert data.tensors["val"][0].shape == (4, 3, 40, 40)
    assert data.tensors["test"][0].shape == (6, 3, 40, 40)
    assert next(iter(data.train_dataloader()))[0].shape == (8, 3, 40, 40)
