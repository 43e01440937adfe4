"""The paper's published numbers (``paper_reference.csv``, with its source) and its row order."""

from __future__ import annotations

import functools
import importlib.resources
import itertools
from io import StringIO

import pandas as pd

REFERENCE_FILE = "paper_reference.csv"
MODELS = ("A", "B", "C")
DOWNSAMPLES = ("pool", "stride", "convpool", "conv")  # the paper's column order in Table 3


@functools.lru_cache(maxsize=1)
def reference() -> pd.DataFrame:
    """One row per published number: kind, name, model, downsample, dataset, augmentation,
    error (%), params_exact, params_printed."""
    text = importlib.resources.files("ablate.report").joinpath(REFERENCE_FILE).read_text("utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    frame = pd.read_csv(StringIO("\n".join(lines)), dtype={"params_printed": str, "model": str,
                                                         "downsample": str})
    frame["params_exact"] = frame["params_exact"].astype("Int64")
    return frame


def source() -> str:
    """The citation lines at the top of the reference file."""
    text = importlib.resources.files("ablate.report").joinpath(REFERENCE_FILE).read_text("utf-8")
    lines = [line.lstrip("# ").rstrip() for line in text.splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("Source:"))
    cited = itertools.takewhile(lambda line: not line.startswith("kind:"), lines[start:])
    return " ".join(cited).removeprefix("Source: ")


def table3() -> pd.DataFrame:
    """The 12 models of Table 3 in the paper's order."""
    frame = reference()
    return frame[frame["kind"] == "table3"].reset_index(drop=True)


def lookup(name: str, dataset: str, augmentation: str) -> pd.Series | None:
    """The published row for this model on this dataset and augmentation, if the paper has one."""
    frame = reference()
    match = frame[(frame["name"] == name) & (frame["dataset"] == dataset)
                  & (frame["augmentation"] == augmentation) & (frame["kind"] != "comparison")]
    return match.iloc[0] if len(match) else None


def comparisons() -> pd.DataFrame:
    frame = reference()
    return frame[frame["kind"] == "comparison"].reset_index(drop=True)
