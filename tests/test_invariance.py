"""Invariance measurement: the training move, exact consistency, hand-counted expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ablate import invariance, spec
from ablate.data.augment import FlipTranslate
from ablate.invariance import directions, predictions, shift, summarise
from ablate.network import build_network

CONF = Path(__file__).resolve().parents[1] / "conf"


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shift_moves_content_down_and_right_by_positive_dy_dx():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    for dy, dx in [(1, 0), (0, 1), (-2, 3), (4, -4)]:
        out = shift(x, dy, dx)
        assert out.shape == x.shape
        assert out.nonzero().tolist() == [[0, 0, 8 + dy, 8 + dx]]
        assert out.sum() == 1.0
    edge = torch.zeros(1, 1, 16, 16)
    edge[0, 0, 0, 0] = 1.0
    assert shift(edge, -1, 0).sum() == 0.0  # moved out of the frame, zeros came in
    with pytest.raises(ValueError, match="out of its frame"):
        shift(x, 16, 0)


def test_shift_and_flip_are_the_moves_the_training_augmentation_makes():
    # Values in [1, 2]: never zero, so every shift and its zero fill are identifiable.
    x = 1.0 + torch.rand(64, 2, 12, 12, generator=generator())
    out = FlipTranslate(max_shift=4, flip=False)(x, generator(1))
    found = set()
    for original, moved in zip(x, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.equal(shift(original[None], dy, dx)[0], moved)
        ]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) > 20  # many different moves were checked, not just the identity
    mirrored = FlipTranslate(max_shift=0, flip=True)(x, generator(2))
    flipped = [
        torch.equal(m, invariance.flip(o[None])[0]) for o, m in zip(x, mirrored, strict=True)
    ]
    assert any(flipped) and not all(flipped)
    assert all(torch.equal(m, o) for o, m, f in zip(x, mirrored, flipped, strict=True) if not f)


def test_perturbations_are_identity_32_shifts_and_flip():
    keys = list(invariance.perturbations())
    assert keys[0] == "identity" and keys[-1] == "flip" and len(keys) == 34
    assert len(set(directions(3))) == 8 and all(max(map(abs, d)) == 3 for d in directions(3))
    for bad in [(0,), (1, 1), (-2,)]:
        with pytest.raises(ValueError, match="distinct positive integers"):
            invariance.perturbations(bad)


def test_a_network_that_ignores_position_is_fully_consistent():
    # Content only in the central 8x8 of 16x16 (a zero border of 4 px), so no move of up to
    # 4 px pushes content out of the frame, and the global average cannot change. Integer
    # values keep float sums exact whatever the summation order, so the claim holds bit for bit.
    n = 200
    images = torch.zeros(n, 3, 16, 16)
    images[:, :, 4:12, 4:12] = torch.randint(-5, 6, (n, 3, 8, 8), generator=generator()).float()
    weights = torch.randn(3, 10, generator=generator(1))
    labels = torch.randint(0, 10, (n,), generator=generator(2))

    def average_then_linear(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ weights

    result = summarise(predictions(average_then_linear, images, batch_size=64), labels)
    entries = [result["flip"], *result["directions"].values()]
    entries += [result[f"shift_{s}"] for s in (1, 2, 3, 4)]
    assert len(result["directions"]) == 32
    assert all(entry["consistency"] == 1.0 for entry in entries)
    # Same predictions, same error (approx only for the means over 8 moves: float division).
    assert all(entry["error"] == pytest.approx(result["identity"]["error"]) for entry in entries)
    assert 0.5 < result["identity"]["error"] < 1.0  # the labels are random: not a trivial net


def test_a_network_that_reads_one_pixel_matches_the_hand_count():
    # class = whether pixel (8, 8) > 0. After a move (dy, dx) it reads the input at
    # (8 - dy, 8 - dx); after a flip at (8, 7).
    images = torch.zeros(4, 1, 16, 16)
    images[0, 0, 8, 8] = 1.0  # A: the pixel alone: class 1, lost by every move and the flip
    # B: blank: class 0 always
    images[2, 0, 7:10, 7:10] = 1.0  # C: 3x3 block: class 1, kept by 1-px moves and the flip
    images[3, 0, 7, 8] = 1.0  # D: pixel just above: class 0, becomes 1 only for dy=1, dx=0
    labels = torch.tensor([1, 0, 1, 1])  # D is misclassified unperturbed

    def one_pixel(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0, 8, 8] > 0).long()

    result = summarise(predictions(one_pixel, images), labels)
    # identity predicts [1, 0, 1, 0].
    assert result["identity"] == {"error": 0.25, "consistency": 1.0}
    # dy=1, dx=0 predicts [0, 0, 1, 1]: A and D change; only A is wrong.
    assert result["directions"]["dy=1,dx=0"] == {"error": 0.25, "consistency": 0.5}
    # The other seven 1-px moves predict [0, 0, 1, 0]: A changes; A and D are wrong.
    for dy, dx in directions(1):
        if (dy, dx) != (1, 0):
            assert result["directions"][f"dy={dy},dx={dx}"] == {"error": 0.5, "consistency": 0.75}
    assert result["shift_1"] == {"error": (0.25 + 7 * 0.5) / 8, "consistency": (0.5 + 7 * 0.75) / 8}
    # 2 to 4 px: every image reads 0, so A and C change; A, C and D are wrong.
    for step in (2, 3, 4):
        assert result[f"shift_{step}"] == {"error": 0.75, "consistency": 0.5}
    # The flip predicts [0, 0, 1, 0]: A changes; A and D are wrong.
    assert result["flip"] == {"error": 0.5, "consistency": 0.75}


def test_identity_error_is_the_plain_test_error_and_predictions_are_per_example():
    layers = yaml.safe_load((CONF / "model" / "C.yaml").read_text())["layers"]
    torch.manual_seed(0)
    net = build_network(layers, spec.all_conv, 1, 16, 10, width=0.25).eval()
    images = torch.randn(50, 1, 16, 16, generator=generator())
    labels = torch.randint(0, 10, (50,), generator=generator(1))
    with torch.no_grad():
        plain = (net(images).argmax(1) != labels).double().mean().item()

    predicted = predictions(net, images, shifts=(1, 2), batch_size=7)
    result = invariance.summarise(predicted, labels)
    assert result["identity"]["error"] == plain
    assert list(result) == ["images", "identity", "flip", "shift_1", "shift_2", "directions"]
    assert result["images"] == 50 and len(predicted) == 1 + 16 + 1
    assert all(p.dtype == torch.int64 and p.shape == (50,) for p in predicted.values())
    assert json.loads(json.dumps(result)) == result
    with pytest.raises(ValueError, match="labels"):
        invariance.summarise(predicted, labels[:10])
