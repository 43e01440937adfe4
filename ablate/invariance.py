"""Does pooling buy invariance? Test error and prediction consistency under small moves.

Every variant is shown the same perturbed test tensors, as the network sees them (after
preprocessing and any ``eval_transform``), moved the way the training augmentation
(``FlipTranslate``) moves them: exact integer shifts with zero fill (the training mean after
preprocessing) and left-right flips. So a difference between variants is the architecture's.

Two numbers per perturbation: the test error, and the consistency (the fraction of images whose
predicted class is the one predicted unperturbed): a network can keep its error while changing
many predictions. Tensors and a ``predict`` callable only, nothing of Lightning or records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Predict = Callable[[Tensor], Tensor]
Perturb = Callable[[Tensor], Tensor]

IDENTITY = "identity"
FLIP = "flip"
DEFAULT_SHIFTS = (1, 2, 3, 4)


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """Move NCHW images down by ``dy`` and right by ``dx`` pixels; zeros come in at the border.

    ``FlipTranslate``'s convention (a test holds the two together), ``out[i, j] = x[i - dy,
    j - dx]``, but for a given ``(dy, dx)``, which its ``select`` cannot be asked for: a pad on
    one side and a negative pad (a crop) on the other, in one call.
    """
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(
            f"shift (dy={dy}, dx={dx}) would move a {h}x{w} image entirely out of its frame; "
            f"use |dy| < {h} and |dx| < {w}")
    return F.pad(x, (dx, -dx, dy, -dy))


def flip(x: Tensor) -> Tensor:
    """Mirror left-right, as the training augmentation does."""
    return x.flip(-1)


def direction_key(dy: int, dx: int) -> str:
    """The record key of one shift, e.g. ``dy=-1,dx=0`` (content moved up by one pixel)."""
    return f"dy={dy},dx={dx}"


def directions(step: int) -> list[tuple[int, int]]:
    """The 8 moves of ``step`` pixels: along the axes and the diagonals."""
    return [(dy, dx) for dy in (-step, 0, step) for dx in (-step, 0, step) if (dy, dx) != (0, 0)]


def perturbations(shifts: Iterable[int] = DEFAULT_SHIFTS) -> dict[str, Perturb]:
    """Identity first (the reference for consistency), then every shift, then the flip."""
    steps = list(shifts)
    if any(not isinstance(s, int) or s < 1 for s in steps) or len(set(steps)) != len(steps):
        raise ValueError(
            f"shifts must be distinct positive integers (pixels), e.g. (1, 2, 3, 4); got {steps}")
    table: dict[str, Perturb] = {IDENTITY: lambda x: x}
    for step in steps:
        for dy, dx in directions(step):
            table[direction_key(dy, dx)] = lambda x, dy=dy, dx=dx: shift(x, dy, dx)
    table[FLIP] = flip
    return table


def predictions(predict: Predict, images: Tensor, shifts: Iterable[int] = DEFAULT_SHIFTS,
                batch_size: int = 1000) -> dict[str, Tensor]:
    """Predicted class of every image under every perturbation: ``{key: int64 (N,) on CPU}``,
    apart from ``summarise`` so that the prediction file and the summary share forward passes.

    ``predict`` returns scores ``(N, classes)`` or classes ``(N,)``; the caller puts what it
    wraps in evaluation mode (no dropout).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.dim() != 4:
        raise ValueError(f"images must be NCHW, got shape {tuple(images.shape)}")
    out: dict[str, Tensor] = {}
    with torch.inference_mode():
        for key, perturb in perturbations(shifts).items():
            parts = [_classes(predict(perturb(batch))) for batch in images.split(batch_size)]
            out[key] = torch.cat(parts).to("cpu", torch.int64)
    return out


def summarise(predicted: dict[str, Tensor], labels: Tensor) -> dict[str, Any]:
    """Error and consistency per perturbation, and their means over the 8 moves of each step.

    Layout (plain floats, JSON-ready)::

        {"images": N, "identity": {"error": e, "consistency": 1.0},
         "flip": {"error": e, "consistency": c},
         "shift_1": {"error": mean over 8 moves, "consistency": mean}, ..., "shift_4": {...},
         "directions": {"dy=-1,dx=-1": {"error": e, "consistency": c}, ...}}
    """
    if IDENTITY not in predicted:
        raise ValueError(
            f"predicted needs the {IDENTITY!r} entry, the reference; got {list(predicted)}")
    labels = labels.to("cpu", torch.int64)
    reference = predicted[IDENTITY]
    if reference.shape != labels.shape:
        raise ValueError(f"{len(reference)} predictions per perturbation but {len(labels)} labels; "
                         "pass the labels of the images that were predicted")

    def scores(classes: Tensor) -> dict[str, float]:
        return {"error": (classes != labels).double().mean().item(),
                "consistency": (classes == reference).double().mean().item()}

    result: dict[str, Any] = {"images": len(labels), IDENTITY: scores(reference)}
    if FLIP in predicted:
        result[FLIP] = scores(predicted[FLIP])
    moves = {key: scores(classes) for key, classes in predicted.items() if key.startswith("dy=")}
    for step in sorted({_step(key) for key in moves}):
        group = [moves[direction_key(dy, dx)] for dy, dx in directions(step)]
        result[f"shift_{step}"] = {name: sum(entry[name] for entry in group) / len(group)
                                   for name in ("error", "consistency")}
    result["directions"] = moves
    return result


def _classes(output: Tensor) -> Tensor:
    if output.dim() == 2:
        return output.argmax(1)
    if output.dim() == 1:
        return output
    raise ValueError(
        f"predict returned shape {tuple(output.shape)}; return scores (N, classes) or classes (N,)")


def _step(key: str) -> int:
    dy, dx = (int(part.split("=")[1]) for part in key.split(","))
    return max(abs(dy), abs(dx))
